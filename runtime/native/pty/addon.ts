import { loadAddon } from "../load.ts";

/** runtime/native/pty/pty.c. Every fd it returns is O_CLOEXEC. */
export interface PtyAddon {
  /** A real pipe: [read end, write end]. */
  pipe(): [number, number];
  /** A second descriptor for fd's open file. */
  dup(fd: number): number;
  /** A listening unix stream socket at path (for runc --console-socket). */
  listenUnix(path: string): number;
  /** Accepts one connection on listenFd and returns the fd its peer sent (SCM_RIGHTS), non-blocking. */
  recvFd(listenFd: number, timeoutMs: number): number;
  /** A new pty pair; the master is non-blocking. */
  openPty(): { master: number; slave: number; path: string };
  setWinsize(fd: number, rows: number, cols: number): void;
}

export function ptyAddon(): PtyAddon {
  return loadAddon<PtyAddon>("pty", "KUASAR_PTY_ADDON");
}
