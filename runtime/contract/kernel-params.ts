import { LOG_LEVELS, toLogLevel } from "./log-level.ts";

// The task.* kernel parameters (Kuasar's names and defaults): the host writes them on the guest's command line, the
// agent reads them from /proc/cmdline. Both sides are made from TASK_PARAMS below.

/** One task.* parameter: what it means, how the guest reads it and how the host writes it. */
interface TaskParam<T> {
  name: string;
  doc: string;
  default: T;
  /** The value of `name=text` (text undefined for a bare `name`), or undefined when text is not one. */
  parse(text: string | undefined): T | undefined;
  /** The guest's warning for a text parse refused; the value stays what it was. */
  refused(text: string | undefined): string;
  /** The parameter for value; undefined for a flag that is off, which absence says. */
  format(value: T): string | undefined;
}

/** "a, b or c". */
function listOr(values: readonly string[]): string {
  return values.length < 2 ? values.join("") : `${values.slice(0, -1).join(", ")} or ${values.at(-1)}`;
}

function choice<const V extends string>(
  name: string,
  doc: string,
  values: readonly V[],
  fallback: NoInfer<V>,
  read: (text: string) => NoInfer<V> | undefined = (t) => values.find((v) => v === t),
): TaskParam<V> {
  return {
    name,
    doc,
    default: fallback,
    parse: (text) => (text === undefined ? undefined : read(text)),
    refused: (text) => `kernel parameter ${name}=${text ?? ""} must be ${listOr(values)}; using ${fallback}`,
    format: (value) => `${name}=${value}`,
  };
}

const TRUE = ["1", "true", "yes", "on", "y"];
const FALSE = ["0", "false", "no", "off", "n"];

/** Off by default; on as a bare `name`, or `name=1` and the like. */
function flag(name: string, doc: string): TaskParam<boolean> {
  return {
    name,
    doc,
    default: false,
    parse: (text) => {
      if (text === undefined || TRUE.includes(text.toLowerCase())) return true;
      return FALSE.includes(text.toLowerCase()) ? false : undefined;
    },
    refused: (text) =>
      `kernel parameter ${name}=${text ?? ""} is not a boolean (use ${name}, ${name}=1 or ${name}=0); ignored`,
    format: (on) => (on ? name : undefined),
  };
}

function absolutePath(name: string, doc: string, fallback: string): TaskParam<string> {
  return {
    name,
    doc,
    default: fallback,
    parse: (text) => (text?.startsWith("/") ? text : undefined),
    refused: (text) => `kernel parameter ${name}=${text ?? ""} must be an absolute path; using ${fallback}`,
    format: (value) => `${name}=${value}`,
  };
}

/** Every task.* parameter, in the order the host writes them. */
export const TASK_PARAMS = {
  sharefsType: choice("task.sharefs_type", "How the host shares files with the guest.", ["9p", "virtiofs"], "9p"),
  logLevel: choice("task.log_level", "vmm-task's log level.", LOG_LEVELS, "info", toLogLevel),
  hybridVsock: flag(
    "task.hybrid_vsock",
    "The host reaches the agent through hybrid vsock (cloud-hypervisor, vhost-device-vsock), whose VMM picks the " +
      "source port, so the agent does not demand a privileged one. Without it (vhost-vsock) only peers with a " +
      "source port <= 1023 are served. The host builds the command line, so it is trusted.",
  ),
  debug: flag(
    "task.debug",
    "Serve a debug shell on DEBUG_CONSOLE_PORT and answer SandboxService.ExecVMProcess (both run commands as root).",
  ),
  enableTracing: flag(
    "task.enable_tracing",
    "Kuasar's agent tracing switch; the host sends trace context into the guest only with [hypervisor.task] enable_tracing.",
  ),
  // The guest image is busybox, which has no /bin/bash.
  debugShell: absolutePath("task.debug_shell", "The debug console's shell.", "/bin/sh"),
};

type TaskParamKey = keyof typeof TASK_PARAMS;
export type TaskParamValues = {
  [K in TaskParamKey]: (typeof TASK_PARAMS)[K] extends TaskParam<infer T> ? T : never;
};
export interface TaskParams extends TaskParamValues {
  /** Unknown task.* keys and bad values, each naming the parameter; the value stayed what it was. */
  warnings: string[];
}

const ENTRIES = Object.entries(TASK_PARAMS) as Array<[TaskParamKey, TaskParam<unknown>]>;
const BY_NAME = new Map(ENTRIES.map(([key, param]) => [param.name, [key, param] as const]));

export const DEFAULT_PARAMS: Readonly<TaskParamValues> = Object.fromEntries(
  ENTRIES.map(([key, param]) => [key, param.default]),
) as TaskParamValues;

/** Splits a kernel command line like the kernel does: whitespace-separated, double quotes group. */
export function splitCmdline(text: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  let any = false;
  for (const ch of text) {
    if (ch === '"') {
      quoted = !quoted;
      any = true;
    } else if (!quoted && /\s/.test(ch)) {
      if (any) out.push(cur);
      cur = "";
      any = false;
    } else {
      cur += ch;
      any = true;
    }
  }
  if (any) out.push(cur);
  return out;
}

/** The guest's side: the task.* parameters of a kernel command line; the last value of a key wins, as in the kernel. */
export function parseCmdline(cmdline: string): TaskParams {
  const values: Record<string, unknown> = { ...DEFAULT_PARAMS };
  const warnings: string[] = [];
  for (const token of splitCmdline(cmdline)) {
    if (!token.startsWith("task.")) continue;
    const eq = token.indexOf("=");
    const name = eq < 0 ? token : token.slice(0, eq);
    const text = eq < 0 ? undefined : token.slice(eq + 1);
    const known = BY_NAME.get(name);
    if (!known) {
      warnings.push(`unknown kernel parameter ${name} ignored (known: ${[...BY_NAME.keys()].join(", ")})`);
      continue;
    }
    const [key, param] = known;
    const value = param.parse(text);
    if (value === undefined) warnings.push(param.refused(text));
    else values[key] = value;
  }
  return { ...(values as TaskParamValues), warnings };
}

/**
 * The host's side: the parameters for values, in TASK_PARAMS order; a flag that is off is left out. Throws when
 * the guest would not read a value back as it is (refused, or split by a blank or a quote).
 */
export function taskParams(values: Partial<TaskParamValues>): string[] {
  const out: string[] = [];
  for (const [key, param] of ENTRIES) {
    const value = values[key];
    const token = value === undefined ? undefined : param.format(value);
    if (token === undefined) continue;
    const read = parseCmdline(token);
    if (read.warnings.length > 0 || read[key] !== value) {
      throw new Error(
        `${param.name}: ${JSON.stringify(value)} cannot be passed to the guest: ` +
          (read.warnings.join("; ") || `the guest would read ${JSON.stringify(read[key])}`),
      );
    }
    out.push(token);
  }
  return out;
}
