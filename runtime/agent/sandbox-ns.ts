import { closeSync, mkdirSync, openSync } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { nsAddon } from "../native/ns/addon.ts";
import { TaskError } from "./errors.ts";
import { SANDBOX_NS_DIR, sandboxNamespaces } from "./spec.ts";

/** What the ns addon takes in one call (runtime/native/ns/ns.c MAX_SYSCTLS). */
const MAX_SYSCTLS = 256;

export interface SandboxNsOptions {
  /** Where the namespaces are bind-mounted; default /run/sandbox-ns. */
  dir?: string;
  /** The pod's hostname, set in its uts namespace. */
  hostname?: string;
  /** PodSandboxConfig sysctls ("net.ipv4.ip_forward" or "net/ipv4/conf/eth0.100/forwarding" style keys). */
  sysctls?: Record<string, string>;
}

/**
 * Creates the pod's persistent ipc and uts namespaces (SetupSandbox) as bind mounts under dir, sets the
 * hostname there and applies sysctls inside them (ipc sysctls such as kernel.shm* are per ipc namespace; net.*
 * ones reach the VM's, i.e. the pod's). When they exist already, the settings are applied again.
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
  const entries = Object.entries(opts.sysctls ?? {});
  if (entries.length > MAX_SYSCTLS) {
    throw new TaskError("InvalidArgument", `${entries.length} pod sysctls given; at most ${MAX_SYSCTLS} are applied`);
  }
  const sysctls: string[] = [];
  const sysctlByPath = new Map<string, string>();
  for (const [key, value] of entries) {
    const file = sysctlPath(key);
    sysctls.push(file, checkValue(key, value));
    sysctlByPath.set(file, `${key}=${value}`);
  }

  mkdirSync(dir, { recursive: true });
  const existing = sandboxNamespaces(dir);
  const create = !(existing.ipc && existing.uts);
  // New namespaces are bind-mounted onto these files, which must exist.
  if (create) for (const f of [ipc, uts]) closeSync(openSync(f, "a"));
  try {
    nsAddon().setup(ipc, uts, create, hostname, sysctls);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const sysctl = [...sysctlByPath].find(([file]) => e.message.includes(file));
    if (sysctl) {
      // a key this kernel does not have is the caller's mistake; anything else is ours
      const code = e.code === "ENOENT" ? "InvalidArgument" : "Internal";
      throw new TaskError(code, `pod sysctl ${sysctl[1]} cannot be applied: ${e.message}`);
    }
    throw new TaskError("Internal", `setting up the pod namespaces in ${dir} failed: ${e.message}`);
  }
  return { ipc, uts };
}

/** Unmounts and removes the persistent namespaces (pod teardown; a no-op when absent). */
export async function teardownSandboxNamespaces(dir = SANDBOX_NS_DIR): Promise<void> {
  for (const type of Object.keys(sandboxNamespaces(dir))) {
    const f = path.join(dir, type);
    try {
      nsAddon().unmount(f);
    } catch (err) {
      throw new TaskError("Internal", `unmounting the pod's ${type} namespace ${f} failed: ${(err as Error).message}`);
    }
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
