/** Kuasar's log line, `[<RFC3339 time> <LEVEL> <target>] <message>`, written to stderr (the guest console). */
export type Level = "error" | "warn" | "info" | "debug" | "trace";

const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };

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
    sink(`[${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${target}] ${msg}\n`);
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
