import { writeSync } from "node:fs";
import { type LogLevel, toLogLevel } from "../contract/log-level.ts";
import { escapeText } from "../text/escape.ts";
import { priorityPrefix, stderrIsJournal } from "./journal.ts";
import { type Fields, fieldKeyDefuser, formatFields } from "./logfmt.ts";

export type { Fields } from "./logfmt.ts";

/**
 * Kuasar's log line, `[<RFC3339 time> <LEVEL> <target>] <message>`, to stderr: journald for the daemon, the serial
 * console for the agent, with the line's fields after the message as logfmt (` sandbox=web-0 vmm_pid=42`). Messages
 * and values carry guest and container text (agent errors, runc output, console lines), so each is escaped and cut:
 * one message is always one line, and no line of ours can be forged. Under systemd each line starts with its
 * sd-daemon priority (`<3>` error ... `<7>` debug), which journald strips and files the line under.
 */
export type Level = LogLevel;
const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };
/** Characters of one message; what is longer is cut with a note. The longest we write (a VMM command line) are a few KiB. */
export const MAX_MESSAGE = 16_384;

let threshold: Level = "info";
let padLevel = false;
let sink: (line: string) => void = (line) => process.stderr.write(line);
/** Whether lines carry journald's priority prefix; undefined: decided from the environment at the first line. */
let journal: boolean | undefined;

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
 * vmm-task writes them; the daemon's never were); `write` is where lines go and `journal` whether they carry the
 * priority prefix (by default: when stderr is systemd's journal stream), for tests.
 */
export function configureLog(opts: {
  level?: Level;
  padLevel?: boolean;
  write?: (line: string) => void;
  journal?: boolean;
}): void {
  if (opts.level) threshold = opts.level;
  if (opts.padLevel !== undefined) padLevel = opts.padLevel;
  if (opts.write) sink = opts.write;
  if (opts.journal !== undefined) journal = opts.journal;
}

let stderrQueued = false;

/**
 * A sink for the agent: each line goes to fd 2 with write(2). process.stderr on the guest's console is a tty stream,
 * and creating it loads and compiles node's stream code at the first line, on the agent's start under TCG. Should a
 * write fail (a non-blocking descriptor that is full), that line and every later one go through process.stderr,
 * which queues, so lines stay in order.
 */
export function writeStderrSync(line: string): void {
  if (stderrQueued) {
    process.stderr.write(line);
    return;
  }
  const buf = Buffer.from(line);
  let done = 0;
  try {
    while (done < buf.length) done += writeSync(2, buf, done);
  } catch {
    stderrQueued = true;
    process.stderr.write(buf.subarray(done));
  }
}

type Log = (msg: string, fields?: Fields) => void;

export interface Logger {
  error: Log;
  warn: Log;
  info: Log;
  debug: Log;
  trace: Log;
  /** Whether a line at this level is written now: for callers that would do work only to log it. */
  enabled(level: Level): boolean;
  /** A logger for a part of this one: target `<target>::<name>`, the same fields. */
  child(name: string): Logger;
  /** The same target with more fields on every line (a later value for a key replaces the earlier one). */
  with(fields: Fields): Logger;
}

export function logger(target: string, bound: Fields = {}): Logger {
  const emit = (level: Level, msg: string, fields?: Fields) => {
    if (RANK[level] > RANK[threshold]) return;
    journal ??= stderrIsJournal();
    const all = fields ? { ...bound, ...fields } : bound;
    const defuse = fieldKeyDefuser(all);
    const name = padLevel ? level.toUpperCase().padEnd(5) : level.toUpperCase();
    sink(
      `${journal ? priorityPrefix(level) : ""}[${new Date().toISOString()} ${name} ${escapeText(target)}] ` +
        `${defuse(escapeText(msg, { maxLength: MAX_MESSAGE }))}${formatFields(all, defuse)}\n`,
    );
  };
  return {
    error: (m, f) => emit("error", m, f),
    warn: (m, f) => emit("warn", m, f),
    info: (m, f) => emit("info", m, f),
    debug: (m, f) => emit("debug", m, f),
    trace: (m, f) => emit("trace", m, f),
    enabled: (level) => RANK[level] <= RANK[threshold],
    child: (name) => logger(`${target}::${name}`, bound),
    with: (fields) => logger(target, { ...bound, ...fields }),
  };
}
