// Log levels as both sides name them: the daemon's level goes to the guest as task.log_level.

export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The level a name means, case-insensitively and with Kuasar's alias `warning`; undefined for anything else. */
export function toLogLevel(name: string): LogLevel | undefined {
  const v = name.toLowerCase();
  if (v === "warning") return "warn";
  return (LOG_LEVELS as readonly string[]).includes(v) ? (v as LogLevel) : undefined;
}
