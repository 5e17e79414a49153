import { readlinkSync } from "node:fs";
import { nsAddon } from "../native/ns/addon.ts";
import { TaskError } from "./errors.ts";
import { decodeWaitStatus } from "./exit-monitor.ts";

/**
 * The PID 1 of the pod's shared PID namespace. It only has to live and never exit: the ns addon starts it with SIGCHLD
 * ignored, so the kernel reaps the orphans it inherits, and processes inside cannot signal it (a namespace's PID 1
 * gets only the signals it handles). The guest's sleep is busybox's.
 */
export const POD_PID_INIT = ["/bin/sleep", "infinity"];

/** containerd's path for a container that shares a PID namespace: the sandbox's or a target container's pid. */
const PROC_PID_NS = /^\/proc\/([1-9][0-9]{0,9})\/ns\/pid$/;

/**
 * The pod's shared PID namespace (CRI namespace_options.pid = POD, Kubernetes shareProcessNamespace): created on
 * first use and kept by its init process until the agent stops (the init is killed with the agent).
 */
export class PodPidNamespace {
  readonly #argv: string[];
  #pid: number | undefined;
  #gone: string | undefined;

  constructor(argv: string[] = POD_PID_INIT) {
    this.#argv = argv;
  }

  /** The namespace file containers join; starts the init the first time. */
  path(): string {
    if (this.#gone) throw new TaskError("FailedPrecondition", this.#gone);
    if (this.#pid === undefined) {
      try {
        this.#pid = nsAddon().spawnPidNsInit(this.#argv[0] ?? "", this.#argv);
      } catch (err) {
        throw new TaskError("Internal", `creating the pod's shared PID namespace failed: ${(err as Error).message}`);
      }
      return `/proc/${this.#pid}/ns/pid`;
    }
    const status = nsAddon().waitPid(this.#pid, false);
    if (status !== undefined) {
      const { exitStatus, signal } = decodeWaitStatus(status);
      this.#gone =
        `the pod's shared PID namespace is gone: its init (${this.#argv.join(" ")}, pid ${this.#pid}) ` +
        `${signal ? `was killed by ${signal}` : `exited with ${exitStatus}`}, and every process in it with it; ` +
        "recreate the pod";
      throw new TaskError("FailedPrecondition", this.#gone);
    }
    return `/proc/${this.#pid}/ns/pid`;
  }

  /** The init's pid while it runs (tests, logs). */
  get pid(): number | undefined {
    return this.#gone ? undefined : this.#pid;
  }

  /** Kills and reaps the init: every process in the namespace dies with it. A no-op when none was started. */
  stop(): void {
    const pid = this.#pid;
    this.#pid = undefined;
    this.#gone = undefined;
    if (pid === undefined) return;
    try {
      process.kill(pid, "SIGKILL");
      nsAddon().waitPid(pid, true);
    } catch (err) {
      // ESRCH/ECHILD: path() reaped it already.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ESRCH" && code !== "ECHILD") throw err;
    }
  }
}

/** The pod's PID namespace for the guest's containers. */
export const podPidNamespace = new PodPidNamespace();

/**
 * The PID namespace a container joins for containerd's /proc/<pid>/ns/pid. For namespace_options.pid = POD the pid is
 * the sandbox's, i.e. the VMM's on the host, which means nothing in the guest: the container joins the pod's
 * namespace. For TARGET (an ephemeral container, `kubectl debug --target`) it is the target container's pid as the
 * agent reported it, a guest pid in a container's namespace: that namespace is joined as it is. A host pid that
 * happens to equal a container's pid picks that container's namespace, which in a POD pod is the pod's anyway.
 */
export function pidNamespaceFor(specPath: string, pod: Pick<PodPidNamespace, "path">): string {
  const m = PROC_PID_NS.exec(specPath);
  if (!m) {
    throw new TaskError(
      "InvalidArgument",
      `linux.namespaces: pid namespace path "${specPath}" is not /proc/<pid>/ns/pid, the only form containerd writes`,
    );
  }
  const own = readlinkSync("/proc/self/ns/pid");
  let target: string | undefined;
  try {
    target = readlinkSync(specPath);
  } catch {
    // no such process in the guest: the sandbox's pid
  }
  return target !== undefined && target !== own ? specPath : pod.path();
}
