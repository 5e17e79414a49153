import type { Envelope } from "../protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";

/** Bounded queue of guest events (e.g. /tasks/oom) that the host drains with GetEvents. */
export class EventQueue {
  private items: Envelope[] = [];
  private waiters: Array<(e: Envelope) => void> = [];

  constructor(private readonly max = 1024) {}

  push(e: Envelope): void {
    const w = this.waiters.shift();
    if (w) {
      w(e);
      return;
    }
    if (this.items.length >= this.max) this.items.shift();
    this.items.push(e);
  }

  /** Next event; waits for one, or rejects when the signal aborts (the host's call went away). */
  next(signal: AbortSignal): Promise<Envelope> {
    const ready = this.items.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const take = (e: Envelope) => {
        signal.removeEventListener("abort", onAbort);
        resolve(e);
      };
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== take);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(take);
    });
  }
}
