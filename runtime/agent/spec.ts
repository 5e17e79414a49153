import { existsSync, readFileSync, statSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { OciNamespace, OciProcess, OciSpec } from "../contract/oci.ts";
import { TaskError } from "./errors.ts";
import { type PodPidNamespace, pidNamespaceFor, podPidNamespace } from "./pod-pid-ns.ts";
import { ensurePodTmpfs, POD_TMPFS_DIR, podTmpfsBinds } from "./pod-tmpfs.ts";

/** Security modules the guest kernel enforces; labels for others would make runc fail. */
export interface GuestLsm {
  apparmor: boolean;
  selinux: boolean;
}

export interface AdjustSpecOptions {
  /** The bundle directory in the guest. */
  bundle: string;
  /** The pod's persistent namespaces that exist (SetupSandbox), by OCI type ("ipc", "uts"). */
  sandboxNamespaces?: Partial<Record<string, string>>;
  /**
   * The PID namespace to join for containerd's pid namespace path (pidNamespaceFor); without it the path is dropped
   * and the container gets a PID namespace of its own.
   */
  pidNamespace?: (specPath: string) => string;
  lsm?: GuestLsm;
  /** Whether the guest kernel accounts swap (memory.swap.max exists); default: probe it. */
  swap?: boolean;
}

export const SANDBOX_NS_DIR = "/run/sandbox-ns";

/**
 * Adjusts a spec written for the host to the guest. Namespace paths containerd puts in (the host's
 * /proc/<pid>/ns/*) mean nothing here: the pod's ipc/uts are joined from SetupSandbox's persistent namespaces
 * instead, a pid path (a pod sharing its PID namespace) becomes opts.pidNamespace's, the network namespace is the
 * VM's own (a fresh one only when the spec asks for one without a path), and every other path is dropped so the
 * container gets a new namespace. A relative rootfs is resolved against the bundle; a systemd-style cgroupsPath
 * becomes the cgroupfs path systemd would have used.
 */
export function adjustSpec(spec: OciSpec, opts: AdjustSpecOptions): OciSpec {
  const out: OciSpec = structuredClone(spec);
  if (!out.root?.path) {
    throw new TaskError(
      "InvalidArgument",
      `bundle ${opts.bundle}: config.json has no root.path; the spec is incomplete`,
    );
  }
  // runc runs the container from a bundle of the agent's own (the host's is read-only), so the rootfs is absolute.
  out.root.path = path.resolve(opts.bundle, out.root.path);
  if (out.process) out.process = adjustProcessSpec(out.process, opts.lsm);
  if (out.linux) {
    const lsm = opts.lsm ?? { apparmor: false, selinux: false };
    if (!lsm.selinux) delete out.linux.mountLabel;
    if (out.linux.namespaces) {
      out.linux.namespaces = out.linux.namespaces.flatMap((ns): OciNamespace[] => {
        if (ns.type === "pid" && ns.path && opts.pidNamespace) return [{ ...ns, path: opts.pidNamespace(ns.path) }];
        const joined = opts.sandboxNamespaces?.[ns.type];
        if (joined) return [{ ...ns, path: joined }];
        if (ns.type === "network" && ns.path) return [];
        const { path: _hostPath, ...fresh } = ns;
        return [fresh];
      });
    }
    if (out.linux.cgroupsPath !== undefined) out.linux.cgroupsPath = cgroupfsPath(out.linux.cgroupsPath);
    if (out.linux.resources) out.linux.resources = adjustResources(out.linux.resources, opts.swap ?? guestHasSwap());
  }
  return out;
}

interface LinuxResources {
  memory?: { swap?: number | bigint; [key: string]: unknown };
  [key: string]: unknown;
}

/**
 * The guest never has a swap device, and a kernel built without CONFIG_SWAP has no memory.swap.max, so a swap
 * limit (CRI sets one equal to the memory limit) would make runc fail: drop it there.
 */
export function adjustResources<T extends object>(resources: T, swap: boolean): T {
  const r = resources as LinuxResources;
  if (swap || r.memory?.swap === undefined) return resources;
  const { swap: _dropped, ...memory } = r.memory;
  return { ...resources, memory };
}

/** CONFIG_SWAP gives both /proc/swaps and the cgroup swap files. */
export function guestHasSwap(): boolean {
  return existsSync("/proc/swaps");
}

/** Drops process security labels the guest kernel cannot apply (the host's AppArmor profile, SELinux labels). */
export function adjustProcessSpec(proc: OciProcess, lsm: GuestLsm = { apparmor: false, selinux: false }): OciProcess {
  const out = { ...proc };
  if (!lsm.apparmor) delete out.apparmorProfile;
  if (!lsm.selinux) delete out.selinuxLabel;
  return out;
}

/**
 * The cgroupfs path for a cgroupsPath: absolute and relative paths are kept; systemd's "slice:prefix:name"
 * becomes /<expanded slice>/<prefix>-<name>.scope, as runc's systemd driver would name it.
 */
export function cgroupfsPath(cgroupsPath: string): string {
  const parts = cgroupsPath.split(":");
  if (cgroupsPath.startsWith("/") || parts.length !== 3) return cgroupsPath;
  const [slice, prefix, name] = parts as [string, string, string];
  if (!name) throw new TaskError("InvalidArgument", `linux.cgroupsPath "${cgroupsPath}": the name part is empty`);
  const unit = name.endsWith(".slice") ? name : prefix ? `${prefix}-${name}.scope` : `${name}.scope`;
  const dirs = expandSlice(slice || "system.slice", cgroupsPath);
  return `/${[...dirs, unit].join("/")}`;
}

// "a-b-c.slice" lives in a.slice/a-b.slice/a-b-c.slice; "-.slice" is the root.
function expandSlice(slice: string, whole: string): string[] {
  const bad = (why: string) =>
    new TaskError("InvalidArgument", `linux.cgroupsPath "${whole}": slice "${slice}" ${why}`);
  if (!slice.endsWith(".slice") || slice.includes("/")) throw bad("must be a systemd slice name ending in .slice");
  if (slice === "-.slice") return [];
  const base = slice.slice(0, -".slice".length);
  if (base === "" || base.includes("--") || base.startsWith("-") || base.endsWith("-")) throw bad("is malformed");
  const words = base.split("-");
  return words.map((_, i) => `${words.slice(0, i + 1).join("-")}.slice`);
}

/** The persistent namespaces SetupSandbox created that exist now (bind mounts, not just the empty files). */
export function sandboxNamespaces(dir = SANDBOX_NS_DIR): Partial<Record<string, string>> {
  const found: Partial<Record<string, string>> = {};
  if (!existsSync(dir)) return found;
  const dirDev = statSync(dir).dev;
  for (const type of ["ipc", "uts"]) {
    const p = path.join(dir, type);
    // A namespace bind mount lives on nsfs, a different device than the directory holding it.
    if (existsSync(p) && statSync(p).dev !== dirDev) found[type] = p;
  }
  return found;
}

/** Which LSMs the running kernel enforces (from securityfs, else the apparmor module parameter). */
export function guestLsm(): GuestLsm {
  const read = (f: string) => {
    try {
      return readFileSync(f, "utf8").trim();
    } catch {
      return "";
    }
  };
  const list = read("/sys/kernel/security/lsm").split(",");
  return {
    apparmor: list.includes("apparmor") || read("/sys/module/apparmor/parameters/enabled") === "Y",
    selinux: list.includes("selinux"),
  };
}

export interface PrepareBundleOptions {
  sandboxNsDir?: string;
  lsm?: GuestLsm;
  /** The pod's shared PID namespace; default the agent's one. */
  podPidNamespace?: Pick<PodPidNamespace, "path">;
  /** Where the pod's tmpfs mounts live; default POD_TMPFS_DIR. */
  podTmpfsDir?: string;
}

/**
 * Writes the agent's own bundle for a container: the spec of the host's bundle (read-only in the guest: the share's
 * top level is the host's alone) adjusted for the guest (see adjustSpec), as <target>/config.json. The pod tmpfs
 * mounts the host asked for (the pod's /dev/shm, memory emptyDirs) become binds of the pod's own, mounted first.
 */
export async function prepareBundle(source: string, target: string, opts: PrepareBundleOptions = {}): Promise<OciSpec> {
  const file = path.join(source, "config.json");
  let spec: OciSpec;
  try {
    spec = JSON.parse(await readFile(file, "utf8")) as OciSpec;
  } catch (e) {
    throw new TaskError("InvalidArgument", `cannot read the OCI spec ${file}: ${(e as Error).message}`);
  }
  const pod = opts.podPidNamespace ?? podPidNamespace;
  const adjusted = adjustSpec(spec, {
    bundle: source,
    sandboxNamespaces: sandboxNamespaces(opts.sandboxNsDir),
    pidNamespace: (specPath) => pidNamespaceFor(specPath, pod),
    lsm: opts.lsm ?? guestLsm(),
  });
  if (adjusted.mounts) {
    const binds = podTmpfsBinds(adjusted.mounts, opts.podTmpfsDir ?? POD_TMPFS_DIR);
    for (const t of binds.tmpfs) await ensurePodTmpfs(t, opts.podTmpfsDir ?? POD_TMPFS_DIR);
    adjusted.mounts = binds.mounts;
  }
  await writeFile(path.join(target, "config.json"), JSON.stringify(adjusted), { mode: 0o600 });
  return adjusted;
}
