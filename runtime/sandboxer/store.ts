import { randomBytes } from "node:crypto";
import { open, readdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";

export const STATE_FILE = "sandbox.json";

/** Writes <dir>/<id>/sandbox.json atomically (see writeJsonAtomic). */
export function writeRecord(sandboxDir: string, record: unknown): Promise<void> {
  return writeJsonAtomic(path.join(sandboxDir, STATE_FILE), record);
}

/**
 * A temp file is written and fsync'd, then renamed over the old one, so a crash or a full disk leaves either the
 * previous content or the new one, never a torn file.
 */
export async function writeJsonAtomic(target: string, value: unknown): Promise<void> {
  const tmp = `${target}.${randomBytes(4).toString("hex")}.tmp`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw new Error(`cannot write ${target}: ${(err as Error).message}`);
  }
  await fh.close();
  await rename(tmp, target);
}

export interface Loaded<T> {
  id: string;
  dir: string;
  record?: T;
  error?: string;
}

/** Every sandbox directory under root with its parsed record, or why it could not be read. */
export async function readRecords<T>(root: string): Promise<Loaded<T>[]> {
  const names = await readdir(root, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  const out: Loaded<T>[] = [];
  for (const ent of names) {
    if (!ent.isDirectory()) continue;
    const dir = path.join(root, ent.name);
    try {
      out.push({ id: ent.name, dir, record: JSON.parse(await readFile(path.join(dir, STATE_FILE), "utf8")) as T });
    } catch (err) {
      out.push({ id: ent.name, dir, error: `${path.join(dir, STATE_FILE)}: ${(err as Error).message}` });
    }
  }
  return out;
}
