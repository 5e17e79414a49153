import { type LogLevel, toLogLevel } from "../contract/log-level.ts";
import { escapeText } from "../text/escape.ts";

/**
 * Kuasar's log line, `[<RFC3339 time> <LEVEL> <target>] <message>`, to stderr: journald for the daemon, the serial
 * console for the agent. Messages carry guest and container text (agent errors, runc output, console lines), so
 * each is escaped and cut: one message is always one line, and no line of ours can be forged.
 */
export type Level = LogLevel;
const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };
/** Characters of one message; what is longer is cut with a note. The longest we write (a VMM command line) are a few KiB. */
export const MAX_MESSAGE = 16_384;

let threshold: Level = "info";
let padLevel = false;
let sink: (line: string) => void = (line) => process.stderr.write(line);

/** A level from a flag or a config key (`source` names it in the error). */
export function parseLevel(value: string, source: string): Level {
  const level = toLogLevel(value);
  if (level) return level;
  throw new Error(`${source}: log level '${value}' is not one of error, warn, info, debug, trace`);
}

export function setLogLevel(level: Level): void {
  threshold = level;
}

/**
 * The level filter; `padLevel` pads the level to five columns as env_logger does (the agent's lines, as Kuasar's
 * vmm-task writes them; the daemon's never were); `write` is where lines go, for tests.
 */
export function configureLog(opts: { level?: Level; padLevel?: boolean; write?: (line: string) => void }): void {
  if (opts.level) threshold = opts.level;
  if (opts.padLevel !== undefined) padLevel = opts.padLevel;
  if (opts.write) sink = opts.write;
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
    const name = padLevel ? level.toUpperCase().padEnd(5) : level.toUpperCase();
    sink(
      `[${new Date().toISOString()} ${name} ${escapeText(target)}] ${escapeText(msg, { maxLength: MAX_MESSAGE })}\n`,
    );
  };
  return {
    error: (m) => emit("error", m),
    warn: (m) => emit("warn", m),
    info: (m) => emit("info", m),
    debug: (m) => emit("debug", m),
    child: (t) => logger(`${target}::${t}`),
  };
}
