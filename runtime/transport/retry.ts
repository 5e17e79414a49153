import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

export interface RetryPolicy {
  /** Total tries; default 1, or unlimited when deadlineMs is set. */
  attempts?: number;
  /** Pause before the second try, doubled after each failure up to maxBackoffMs (defaults 50 and 1000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Stop trying once this many ms have passed since the first try (each try's timeout is capped to fit). */
  deadlineMs?: number;
}

export type RetryError = NodeJS.ErrnoException & { attempts?: number };

/**
 * Runs `attempt(timeoutMs)` until it succeeds, fails with an error `retryable` rejects, or the policy is used up.
 * The last error is rethrown with the number of attempts and the time spent appended.
 */
export async function withRetry<T>(
  policy: RetryPolicy | undefined,
  timeoutMs: number,
  retryable: (err: RetryError) => boolean,
  attempt: (timeoutMs: number) => Promise<T>,
): Promise<T> {
  const started = performance.now();
  const deadline = policy?.deadlineMs === undefined ? Number.POSITIVE_INFINITY : started + policy.deadlineMs;
  const attempts = policy?.attempts ?? (policy?.deadlineMs === undefined ? 1 : Number.POSITIVE_INFINITY);
  const maxBackoff = policy?.maxBackoffMs ?? 1000;
  let backoff = policy?.backoffMs ?? 50;
  for (let n = 1; ; n++) {
    const budget = Math.max(1, Math.min(timeoutMs, Math.floor(deadline - performance.now())));
    try {
      return await attempt(budget);
    } catch (e) {
      const err = e as RetryError;
      const elapsed = performance.now() - started;
      if (!retryable(err) || n >= attempts || elapsed + backoff >= deadline - started) {
        if (n > 1) err.message += ` (gave up after ${n} attempts in ${Math.round(elapsed)} ms)`;
        err.attempts = n;
        throw err;
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, maxBackoff);
    }
  }
}
