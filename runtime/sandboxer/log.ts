import { escapeText } from "../text/escape.ts";

/**
 * Kuasar's log line: `[<RFC3339 time> <LEVEL> <target>] <message>`, to stderr (journald under systemd). Messages
 * carry guest text (agent errors, console lines), so each is escaped and cut: one message is always one line.
 */
export type Level = "error" | "warn" | "info" | "debug" | "trace";
const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };
/** Characters of one message; the longest the daemon writes itself (a VMM command line) are a few KiB. */
export const MAX_MESSAGE = 16_384;

let threshold: Level = "info";

export function parseLevel(value: string, source: string): Level {
  const v = value.toLowerCase();
  if (v === "warning") return "warn";
  if (v in RANK) return v as Level;
  throw new Error(`${source}: log level '${value}' is not one of error, warn, info, debug, trace`);
}

export function setLogLevel(level: Level): void {
  threshold = level;
}

export function logLevel(): Level {
  return threshold;
}

export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  child(target: string): Logger;
}

export function logger(target: string): Logger {
  const emit = (level: Level, msg: string) => {
    if (RANK[level] > RANK[threshold]) return;
    const text = escapeText(msg, { maxLength: MAX_MESSAGE });
    process.stderr.write(`[${new Date().toISOString()} ${level.toUpperCase()} ${escapeText(target)}] ${text}\n`);
  };
  return {
    error: (m) => emit("error", m),
    warn: (m) => emit("warn", m),
    info: (m) => emit("info", m),
    debug: (m) => emit("debug", m),
    child: (t) => logger(`${target}::${t}`),
  };
}
