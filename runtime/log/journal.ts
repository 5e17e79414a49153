import { fstatSync } from "node:fs";
import type { LogLevel } from "../contract/log-level.ts";

/**
 * systemd connects a service's stderr to journald and says so in JOURNAL_STREAM=<dev>:<ino>. Only when fd 2 is still
 * that stream (not redirected by a wrapper or a test) do lines carry the sd-daemon priority prefix, as sd_journal's
 * own check does: journald then files each line at its level, and `journalctl -p warning` works.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? "");
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The syslog priority of each level (sd-daemon(3)): err, warning, info, debug; trace is debug to syslog. */
const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7, trace: 7 };

/** `<N>`, the prefix journald reads a line's priority from (and removes). */
export function priorityPrefix(level: LogLevel): string {
  return `<${PRIORITY[level]}>`;
}
