import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { hashFile } from "./hash.ts";
import { pidAlive } from "./pid.ts";

/** Cache root: $KUASAR_CACHE_DIR, else $XDG_CACHE_HOME/kuasar-vmm, else ~/.cache/kuasar-vmm. Outside the clone on purpose. */
export function defaultCacheDir(): string {
  if (process.env.KUASAR_CACHE_DIR) return process.env.KUASAR_CACHE_DIR;
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(xdg, "kuasar-vmm");
}

export interface FileRecord {
  size: number;
  sha256: string;
}
interface EntryManifest {
  stage: string;
  key: string;
  createdAt: string;
  files: Record<string, FileRecord>;
}

export type LookupResult = { hit: true; dir: string } | { hit: false; reason: string };

/**
 * A content-addressed store: <root>/<stage>/<key>/{out/,entry.json}. An entry is used only when every
 * file it recorded still has its size and sha256, so a truncated or altered artifact is rebuilt, never used.
 */
export class Cache {
  constructor(readonly root: string) {}

  entryDir(stage: string, key: string): string {
    return path.join(this.root, stage, key);
  }

  async lookup(stage: string, key: string): Promise<LookupResult> {
    const dir = this.entryDir(stage, key);
    let manifest: EntryManifest;
    try {
      manifest = JSON.parse(await readFile(path.join(dir, "entry.json"), "utf8")) as EntryManifest;
    } catch {
      return { hit: false, reason: existsSync(dir) ? "incomplete cache entry" : "not built yet" };
    }
    const out = path.join(dir, "out");
    const stampsFile = path.join(dir, "verified.json");
    const stamps = JSON.parse(await readFile(stampsFile, "utf8").catch(() => "{}")) as Record<string, string>;
    let restamped = false;
    for (const [rel, rec] of Object.entries(manifest.files)) {
      const file = path.join(out, rel);
      const st = await stat(file).catch(() => undefined);
      if (!st || st.size !== rec.size) return { hit: false, reason: `cached ${rel} is missing or truncated` };
      // Any write or utimes() changes ctime, which user space cannot set back: an unchanged stamp means the
      // bytes hashed last time are still there, so only touched files are hashed again.
      const stamp = `${st.size}:${st.ino}:${st.ctimeMs}:${st.mtimeMs}`;
      if (stamps[rel] === stamp) continue;
      if ((await hashFile(file)) !== rec.sha256) return { hit: false, reason: `cached ${rel} has a wrong digest` };
      stamps[rel] = stamp;
      restamped = true;
    }
    if (restamped) await writeFile(stampsFile, JSON.stringify(stamps)).catch(() => undefined);
    return { hit: true, dir: out };
  }

  /** The files an entry recorded (out-relative path -> size and sha256), given the out dir lookup or store returned. */
  async files(outDir: string): Promise<Record<string, FileRecord>> {
    const file = path.join(path.dirname(outDir), "entry.json");
    return (JSON.parse(await readFile(file, "utf8")) as EntryManifest).files;
  }

  /** Runs build(tmpOut) and moves the result into place atomically; returns the entry's out dir. */
  async store(stage: string, key: string, build: (out: string) => Promise<void>): Promise<string> {
    const stageDir = path.join(this.root, stage);
    await mkdir(stageDir, { recursive: true });
    await sweepAbandoned(stageDir);
    const tmp = path.join(stageDir, `.tmp-${key.slice(0, 16)}-${process.pid}-${randomBytes(4).toString("hex")}`);
    await mkdir(path.join(tmp, "out"), { recursive: true });
    try {
      await build(path.join(tmp, "out"));
      const files: Record<string, FileRecord> = {};
      for (const rel of await listFiles(path.join(tmp, "out"))) {
        const abs = path.join(tmp, "out", rel);
        files[rel] = { size: (await stat(abs)).size, sha256: await hashFile(abs) };
      }
      const manifest: EntryManifest = { stage, key, createdAt: new Date().toISOString(), files };
      await writeFile(path.join(tmp, "entry.json"), `${JSON.stringify(manifest, null, 2)}\n`);
      const dest = this.entryDir(stage, key);
      await rm(dest, { recursive: true, force: true });
      await rename(tmp, dest);
      return path.join(dest, "out");
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }
}

/**
 * Removes scratch trees of builds whose process is gone (killed, or the machine went down mid-build): a kernel
 * build leaves ~1.5 GB behind. A live pid's tree is another build running now and is left alone.
 */
async function sweepAbandoned(stageDir: string): Promise<void> {
  for (const name of await readdir(stageDir)) {
    const pid = Number(/^\.tmp-[0-9a-f]+-(\d+)-[0-9a-f]+$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || pidAlive(pid)) continue;
    await rm(path.join(stageDir, name), { recursive: true, force: true });
  }
}

/** Regular files below dir (relative paths, sorted); symlinks and directories are covered by the file list's paths. */
async function listFiles(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(path.join(dir, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(path.join(dir, r));
    if (st.isDirectory()) out.push(...(await listFiles(dir, r)));
    else if (st.isFile()) out.push(r);
  }
  return out;
}
