import type { Logger } from "../../../runtime/log/log.ts";

/** A logger that keeps its lines, for tests that check what tracing says. */
export function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = {
    lines,
    error: (m: string) => lines.push(`error ${m}`),
    warn: (m: string) => lines.push(`warn ${m}`),
    info: (m: string) => lines.push(`info ${m}`),
    debug: (m: string) => lines.push(`debug ${m}`),
    trace: (m: string) => lines.push(`trace ${m}`),
    enabled: () => true,
    child: () => log,
    with: () => log,
  };
  return log as unknown as Logger & { lines: string[] };
}

export const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));
