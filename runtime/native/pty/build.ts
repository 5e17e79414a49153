import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { nodeDir, nodeGyp, withLock } from "../gyp.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const sources = [path.join(here, "binding.gyp"), path.join(here, "pty.c")];
const built = path.join(here, "build", "Release", "pty.node");
const stampFile = path.join(here, "build", ".kuasar-stamp");

/**
 * Builds the pty addon with node-gyp (in runtime/native/pty/build, where the loader also finds it) and copies it
 * to <outDir>/pty.node, which it returns. node-gyp runs only when the sources, Node or its headers changed.
 */
export async function buildPtyAddon(outDir: string): Promise<string> {
  const nodedir = nodeDir();
  const h = createHash("sha256");
  for (const f of sources) h.update(`${path.basename(f)}\0`).update(await readFile(f));
  const key = h.update(`\0${process.version}\0${nodedir ?? "download"}`).digest("hex");
  const current = await readFile(stampFile, "utf8").catch(() => "");
  if (current !== key || !existsSync(built)) {
    await withLock(path.join(here, ".build.lock"), async () => {
      const args = [nodeGyp(), "rebuild", ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
      const r = await execa(process.execPath, args, { cwd: here, reject: false, all: true, stdin: "ignore" });
      if (r.failed) {
        throw new Error(
          `building the pty addon with node-gyp failed (in ${here}, exit ${r.exitCode}):\n${r.all ?? ""}`,
        );
      }
      await writeFile(stampFile, key);
    });
  }
  await mkdir(outDir, { recursive: true });
  const out = path.join(outDir, "pty.node");
  if (path.resolve(out) !== built) {
    const tmp = `${out}.tmp-${process.pid}`;
    await copyFile(built, tmp);
    await rename(tmp, out);
  }
  return out;
}

// `npx tsx runtime/native/pty/build.ts [outDir]` builds the addon for development.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildPtyAddon(path.resolve(process.argv[2] ?? path.join(here, "build", "Release"))).then(
    (out) => console.log(`pty addon: ${out}`),
    (e: Error) => {
      console.error(e.message);
      process.exitCode = 1;
    },
  );
}
