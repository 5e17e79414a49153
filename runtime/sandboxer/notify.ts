import { execFile } from "node:child_process";

/**
 * sd_notify through systemd-notify: Node cannot send on a unix datagram socket. --pid names the daemon as the
 * sender, so the unit keeps NotifyAccess=main. Without NOTIFY_SOCKET (not under systemd) it does nothing.
 */
export function sdNotify(state: string): Promise<void> {
  if (!process.env.NOTIFY_SOCKET) return Promise.resolve();
  return new Promise((resolve) => {
    execFile("systemd-notify", [`--pid=${process.pid}`, state], () => resolve());
  });
}

/** Starts WATCHDOG=1 pings at half of WATCHDOG_USEC when systemd asked for them; returns a stop function. */
export function startWatchdog(): () => void {
  const usec = Number(process.env.WATCHDOG_USEC ?? 0);
  const pid = Number(process.env.WATCHDOG_PID ?? process.pid);
  if (!usec || pid !== process.pid) return () => undefined;
  const timer = setInterval(() => void sdNotify("WATCHDOG=1"), Math.max(usec / 2000, 500));
  timer.unref();
  return () => clearInterval(timer);
}
