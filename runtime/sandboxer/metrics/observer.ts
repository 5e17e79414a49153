/**
 * What the sandbox lifecycle tells the metrics. The daemon passes NO_METRICS when `[sandbox] metrics_listen` is
 * off, so the hooks cost a call to an empty function and nothing is recorded.
 */

/** Start's steps, in order (sandbox/boot.ts); `total` is the whole Start as the manager sees it. */
export const START_PHASES = ["spawn", "boot", "agent", "setup", "total"] as const;
export type StartPhase = (typeof START_PHASES)[number];

/** A running sandbox found at daemon start: kept, lost (its VM already gone) or killed (its VM could not be kept). */
export const RECOVERY_OUTCOMES = ["recovered", "lost", "killed"] as const;
export type RecoveryOutcome = (typeof RECOVERY_OUTCOMES)[number];

/** Told of a call to a guest agent that failed (sandboxer/agent.ts). */
export interface AgentCallObserver {
  /** `method` as routed ("containerd.task.v3.Task/Create"), `code` the ttrpc status name ("DeadlineExceeded"). */
  agentCallFailed(method: string, code: string): void;
}

export interface LifecycleMetrics extends AgentCallObserver {
  startPhase(phase: StartPhase, ms: number): void;
  /** A running sandbox's Stop, from the request until its VM is gone and released. */
  stopped(ms: number): void;
  recovery(outcome: RecoveryOutcome): void;
}

export const NO_METRICS: LifecycleMetrics = {
  startPhase() {},
  stopped() {},
  recovery() {},
  agentCallFailed() {},
};

/** A stopwatch for Start's phases: each call records the time since the previous one (or since this was made). */
export function phaseLaps(metrics: LifecycleMetrics): (phase: StartPhase) => void {
  if (metrics === NO_METRICS) return () => {};
  let last = performance.now();
  return (phase) => {
    const now = performance.now();
    metrics.startPhase(phase, now - last);
    last = now;
  };
}
