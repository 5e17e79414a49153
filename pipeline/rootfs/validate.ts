import { lstat, readlink } from "node:fs/promises";
import path from "node:path";
import { hashFile } from "../lib/hash.ts";
import { checkElfClosure, isElf, systemLibDirs } from "./elf.ts";
import type { TreeEntry } from "./tree.ts";

/** Where the agent's files live in the guest (guest-relative). */
export const AGENT_INIT = "sbin/init";
export const AGENT_DIR = "usr/lib/vmm-task";
export const AGENT_BUNDLE = `${AGENT_DIR}/vmm-task.js`;
export const AGENT_ADDON = `${AGENT_DIR}/vsock.node`;
export const INITRD_INIT = "init";

export class RootfsValidationError extends Error {
  constructor(readonly problems: string[]) {
    super(`the staged guest root failed validation:\n  - ${problems.join("\n  - ")}`);
    this.name = "RootfsValidationError";
  }
}

/** Regular files of the tree that are ELF objects (guest-relative paths). */
export async function elfFiles(root: string, tree: TreeEntry[]): Promise<string[]> {
  const out: string[] = [];
  for (const e of tree) if (e.type === "file" && (await isElf(path.join(root, e.path)))) out.push(e.path);
  return out;
}

/**
 * Build-time gates on a staged root: /sbin/init is the agent's init (same sha256 as the task stage's `init`),
 * /init points at it, the bundle and the vsock addon are there, and every ELF finds its interpreter and
 * libraries inside the root. Throws RootfsValidationError listing every problem found.
 */
export async function validateRootfs(
  root: string,
  tree: TreeEntry[],
  agentInitSha256: string,
  libDirs: string[] = systemLibDirs(),
): Promise<void> {
  const problems: string[] = [];
  const init = await lstat(path.join(root, AGENT_INIT)).catch(() => undefined);
  if (!init?.isFile()) {
    problems.push(`/${AGENT_INIT} is missing or not a regular file: the task stage's 'init' must be staged there`);
  } else {
    const digest = await hashFile(path.join(root, AGENT_INIT));
    if (digest !== agentInitSha256) {
      problems.push(
        `/${AGENT_INIT} is not the agent's init (sha256 ${digest.slice(0, 12)}, task stage's init ${agentInitSha256.slice(0, 12)}): something else was staged over it`,
      );
    }
    if ((init.mode & 0o111) === 0)
      problems.push(`/${AGENT_INIT} is not executable (mode 0${(init.mode & 0o7777).toString(8)})`);
  }
  const link = await readlink(path.join(root, INITRD_INIT)).catch(() => undefined);
  if (link !== `/${AGENT_INIT}`) {
    problems.push(
      `/${INITRD_INIT} must be a symlink to /${AGENT_INIT} (the kernel runs /init from an initrd); found ${link ?? "nothing"}`,
    );
  }
  for (const f of [AGENT_BUNDLE, AGENT_ADDON]) {
    const st = await lstat(path.join(root, f)).catch(() => undefined);
    if (!st?.isFile() || st.size === 0) problems.push(`/${f} is missing or empty: the task stage must produce it`);
  }
  for (const p of await checkElfClosure(root, await elfFiles(root, tree), libDirs)) {
    problems.push(`/${p.elf} needs ${p.missing}, which is not in the rootfs (searched ${p.searched.join(", ")})`);
  }
  if (problems.length > 0) throw new RootfsValidationError(problems);
}
