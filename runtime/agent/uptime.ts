/**
 * Milliseconds since node started, monotonic (the guest's wall clock is stepped by SyncClock). Not performance.now():
 * the agent would be perf_hooks' only user, and its modules would sit in the V8 snapshot and the heap of every guest.
 */
export function uptimeMs(): number {
  return process.uptime() * 1000;
}
