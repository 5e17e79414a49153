import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { pidAlive } from "../lib/pid.ts";

/**
 * A kernel build tree kept between builds and keyed on what the tree is made of (source, patches, toolchain):
 * a build that changes only the config then recompiles what that config touches (kbuild records each object's
 * command line and the config symbols it read) instead of every file. The tree is reused only after a build
 * that finished: one killed inside make can leave a truncated object that make would take as up to date.
 */
export interface TreeLease {
  /** Where the source goes (fresh) or already is (reused). */
  readonly dir: string;
  /** The kernel source root inside dir, when reused. */
  readonly srcDir: string | undefined;
  /** Records where materialise() put the source root. */
  prepared(srcDir: string): Promise<void>;
  /** make is about to write objects: until done(), the tree is not trusted. */
  compiling(): Promise<void>;
  /** The build finished; the next one with the same key may reuse the tree. */
  done(): Promise<void>;
  release(): Promise<void>;
}

interface TreeState {
  key: string;
  state: "preparing" | "ready" | "compiling";
  /** The source root, relative to the tree dir. */
  srcDir?: string;
}

/**
 * Takes the tree at dir for one build. Returns undefined when another live build holds it (the caller then
 * builds in a private scratch tree instead of waiting). A tree with another key, or one a build did not finish
 * with, is emptied first.
 */
export async function leaseTree(dir: string, key: string): Promise<TreeLease | undefined> {
  const lock = `${dir}.lock`;
  if (!(await takeLock(lock))) return undefined;
  try {
    const stateFile = path.join(dir, "tree.json");
    const prev = JSON.parse(await readFile(stateFile, "utf8").catch(() => "null")) as TreeState | null;
    const reuse = prev?.key === key && prev.state === "ready" && prev.srcDir !== undefined;
    if (!reuse) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
    }
    let state: TreeState = reuse ? prev : { key, state: "preparing" };
    const save = async (next: Partial<TreeState>) => {
      state = { ...state, ...next };
      await writeFile(stateFile, `${JSON.stringify(state)}\n`);
    };
    await save({});
    return {
      dir,
      srcDir: reuse ? path.join(dir, prev.srcDir!) : undefined,
      prepared: (srcDir) => save({ srcDir: path.relative(dir, srcDir) }),
      compiling: () => save({ state: "compiling" }),
      done: () => save({ state: "ready" }),
      release: () => rm(lock, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(lock, { recursive: true, force: true });
    throw err;
  }
}

/** mkdir as the lock; a lock whose holder is gone is taken over. */
async function takeLock(lock: string): Promise<boolean> {
  await mkdir(path.dirname(lock), { recursive: true });
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(path.join(lock, "pid"), String(process.pid));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const holder = Number(await readFile(path.join(lock, "pid"), "utf8").catch(() => "0"));
      if (holder > 0 && pidAlive(holder)) return false;
      // no pid yet: its holder is between mkdir and writeFile, unless it died there long ago
      const age = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? 0);
      if (holder === 0 && age < 60_000) return false;
      await rm(lock, { recursive: true, force: true });
    }
  }
}
