import { loadAddon } from "../load.ts";

/** runtime/native/ns/ns.c. Errors carry the errno name as code and say what failed on which file. */
export interface NsAddon {
  /**
   * create: new ipc+uts namespaces bind-mounted on the two existing files; otherwise joins the ones mounted there.
   * Then sets the hostname ("" keeps it) and writes each sysctl (flat [path, value, ...]) from inside them.
   */
  setup(ipcFile: string, utsFile: string, create: boolean, hostname: string, sysctls: string[]): void;
  /** Unmounts a namespace bind mount. */
  unmount(file: string): void;
  /** mount(2): flags are MS_* bits, data "" passes none; an error names source, target and type. */
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  /** The mount at target and every mount below it made read-only in one step (mount_setattr, AT_RECURSIVE). */
  readonlyTree(target: string): void;
  /**
   * Starts file (argv: 1 to 16 strings, empty environment) as PID 1 of a new PID namespace, with SIGCHLD ignored
   * (the kernel reaps the orphans it inherits), stdio on /dev/null, and SIGKILL when the calling thread exits.
   * Returns its pid in the caller's namespace.
   */
  spawnPidNsInit(file: string, argv: string[]): number;
  /** waitpid(2) for a child: its raw wait status once it exited (and is reaped), else undefined (block=false). */
  waitPid(pid: number, block: boolean): number | undefined;
}

/** The mount(2) flags callers pass (linux/mount.h). */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  REMOUNT: 0x20,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
} as const;

export function nsAddon(): NsAddon {
  return loadAddon<NsAddon>("ns", "KUASAR_NS_ADDON");
}
