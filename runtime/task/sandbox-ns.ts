import { closeSync, openSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { TaskError } from "./errors.ts";
import { SANDBOX_NS_DIR, sandboxNamespaces } from "./spec.ts";

export interface SandboxNsOptions {
  /** Where the namespaces are bind-mounted; default /run/sandbox-ns. */
  dir?: string;
  /** The pod's hostname, set in its uts namespace. */
  hostname?: string;
  /** PodSandboxConfig sysctls ("net.ipv4.ip_forward" or "net/ipv4/conf/eth0.100/forwarding" style keys). */
  sysctls?: Record<string, string>;
}

// Runs inside the pod's namespaces: ipc sysctls (kernel.shm*, kernel.msg*, fs.mqueue.*) are per ipc
// namespace, so they must be written from within it; the rest (net.*) reach the VM's, i.e. the pod's, values.
const SCRIPT = `
if [ -n "$1" ]; then hostname "$1" || exit 1; fi
shift
while [ $# -gt 0 ]; do
  if ! printf '%s\\n' "$3" > "$2"; then echo "sysctl $1=$3: cannot write $2" >&2; exit 1; fi
  shift 3
done
`;

/**
 * Creates the pod's persistent ipc and uts namespaces (SetupSandbox) as bind mounts under dir, sets the
 * hostname there and applies sysctls inside them. When they exist already, the settings are applied again.
 */
export async function setupSandboxNamespaces(opts: SandboxNsOptions = {}): Promise<{ ipc: string; uts: string }> {
  const dir = opts.dir ?? SANDBOX_NS_DIR;
  const ipc = path.join(dir, "ipc");
  const uts = path.join(dir, "uts");
  const hostname = opts.hostname ?? "";
  if (hostname && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(hostname)) {
    throw new TaskError("InvalidArgument", `pod hostname "${hostname}" is not a valid host name (RFC 1123, max 64)`);
  }
  if (hostname.length > 64) {
    throw new TaskError("InvalidArgument", `pod hostname "${hostname}" is longer than 64 characters`);
  }
  const args = [hostname];
  for (const [key, value] of Object.entries(opts.sysctls ?? {}))
    args.push(key, sysctlPath(key), checkValue(key, value));

  await mkdir(dir, { recursive: true });
  const existing = sandboxNamespaces(dir);
  let cmd: string[];
  if (existing.ipc && existing.uts) {
    cmd = ["nsenter", `--ipc=${ipc}`, `--uts=${uts}`, "sh", "-c", SCRIPT, "sh", ...args];
  } else {
    // unshare bind-mounts the new namespaces onto these files, which must exist.
    for (const f of [ipc, uts]) closeSync(openSync(f, "a"));
    cmd = ["unshare", `--ipc=${ipc}`, `--uts=${uts}`, "sh", "-c", SCRIPT, "sh", ...args];
  }
  const r = await execa(cmd[0]!, cmd.slice(1), { reject: false, all: true, stdin: "ignore", timeout: 30_000 });
  if (r.failed) {
    const how = (r as { code?: string }).code === "ENOENT" ? `${cmd[0]} not found (busybox applet missing?)` : r.all;
    throw new TaskError("Internal", `setting up the pod namespaces in ${dir} failed: ${how || `exit ${r.exitCode}`}`);
  }
  return { ipc, uts };
}

/** Unmounts and removes the persistent namespaces (pod teardown; a no-op when absent). */
export async function teardownSandboxNamespaces(dir = SANDBOX_NS_DIR): Promise<void> {
  for (const type of Object.keys(sandboxNamespaces(dir))) {
    const f = path.join(dir, type);
    const r = await execa("umount", [f], { reject: false, all: true, stdin: "ignore" });
    if (r.failed) throw new TaskError("Internal", `unmounting the pod's ${type} namespace ${f} failed: ${r.all}`);
  }
  await rm(dir, { recursive: true, force: true });
}

/** /proc/sys path of a sysctl key; "/" separated keys keep dots (interface names like eth0.100). */
export function sysctlPath(key: string): string {
  const rel = key.includes("/") ? key : key.replaceAll(".", "/");
  const parts = rel.split("/");
  if (!/^[A-Za-z0-9_./@:+-]+$/.test(key) || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new TaskError("InvalidArgument", `sysctl key "${key}" is malformed`);
  }
  return `/proc/sys/${parts.join("/")}`;
}

function checkValue(key: string, value: string): string {
  if (/[\n\r\0]/.test(value)) throw new TaskError("InvalidArgument", `sysctl ${key}: the value must be a single line`);
  return value;
}
