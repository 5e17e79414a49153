import { escapeText } from "../text/escape.ts";

/**
 * Kuasar's log line, `[<RFC3339 time> <LEVEL> <target>] <message>`, written to stderr (the guest console). Messages
 * carry container output (runc errors), so each is escaped and cut: no line of the agent's can be forged.
 */
export type Level = "error" | "warn" | "info" | "debug" | "trace";

const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };
/** Characters of one message; what is longer is cut with a note. */
export const MAX_MESSAGE = 16_384;

let threshold: Level = "info";
let sink: (line: string) => void = (line) => process.stderr.write(line);

export function isLevel(value: string): value is Level {
  return value in RANK;
}

/** Sets the level filter and, for tests, where lines go. */
export function configureLog(opts: { level?: Level; write?: (line: string) => void }): void {
  if (opts.level) threshold = opts.level;
  if (opts.write) sink = opts.write;
}

export function logEnabled(level: Level): boolean {
  return RANK[level] <= RANK[threshold];
}

export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  trace(msg: string): void;
  child(target: string): Logger;
}

export function logger(target: string): Logger {
  const emit = (level: Level, msg: string) => {
    if (!logEnabled(level)) return;
    // Padded like env_logger so columns line up with the host daemon's lines.
    const text = escapeText(msg, { maxLength: MAX_MESSAGE });
    sink(`[${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${escapeText(target)}] ${text}\n`);
  };
  return {
    error: (m) => emit("error", m),
    warn: (m) => emit("warn", m),
    info: (m) => emit("info", m),
    debug: (m) => emit("debug", m),
    trace: (m) => emit("trace", m),
    child: (t) => logger(`${target}::${t}`),
  };
}
