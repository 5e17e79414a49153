import { GUEST_SHARE } from "../contract/share.ts";
import type { ContainerManager } from "./containers.ts";
import { mountPoints, type Pid1Options, rooted } from "./mounts.ts";
import { failure, runProcess } from "./run-process.ts";

/**
 * Graceful power-off: kills and deletes every container, flushes file systems, unmounts the share, then
 * exits; the C init powers the VM off whenever the agent exits.
 */
export async function shutdownGuest(
  manager: ContainerManager,
  opts: Pid1Options & { exitCode?: number } = {},
): Promise<never> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => {
    timer = setTimeout(() => {
      opts.log?.warn("containers did not stop within 15 s; powering off anyway");
      r();
    }, 15_000);
  });
  await Promise.race([manager.shutdown(), late]);
  clearTimeout(timer);
  await runProcess("sync", [], { stdout: "ignore", stderr: "ignore" });
  const share = rooted(opts, GUEST_SHARE);
  if (mountPoints().has(share)) {
    const r = await runProcess("umount", ["-l", share]);
    if (r.failed) opts.log?.warn(`unmounting ${share} failed: ${failure(r)}`);
  }
  process.exit(opts.exitCode ?? 0);
}
