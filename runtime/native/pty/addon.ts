import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

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

let addon: PtyAddon | undefined;

/** Lookup order: KUASAR_PTY_ADDON, pty.node next to the running bundle, the node-gyp build in the repo. */
export function ptyAddonCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const list = [path.join(here, "pty.node"), path.join(here, "build", "Release", "pty.node")];
  const env = process.env.KUASAR_PTY_ADDON;
  return env ? [env, ...list] : list;
}

export function ptyAddon(): PtyAddon {
  if (addon) return addon;
  const candidates = ptyAddonCandidates();
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(
      `pty addon not found (looked at: ${candidates.join(", ")}); build it with \`npx tsx runtime/native/pty/build.ts\` ` +
        "(node-gyp; needs python3, make, gcc) or point KUASAR_PTY_ADDON at a pty.node",
    );
  }
  addon = createRequire(import.meta.url)(found) as PtyAddon;
  return addon;
}
