import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

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

// node-gyp ships inside npm rather than as a project dependency.
function nodeGyp(): string {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.resolve(path.dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
  ];
  try {
    candidates.push(createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js"));
  } catch {
    // Not installed as a package; npm's bundled copy is the usual one.
  }
  const found = candidates.find((c): c is string => c !== undefined && existsSync(c));
  if (!found) {
    throw new Error(
      `node-gyp not found (looked at: ${candidates.filter(Boolean).join(", ")}); it ships with npm: install npm (apt-get install -y npm) or set npm_config_node_gyp`,
    );
  }
  return found;
}

// Headers installed beside the running Node (Debian's nodejs-dev, official tarballs) avoid a download.
function nodeDir(): string | undefined {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), "..");
  return existsSync(path.join(prefix, "include", "node", "node_api.h")) ? prefix : undefined;
}

// node-gyp builds in the source directory, so concurrent builds (parallel test files, the pipeline) take turns.
async function withLock(dir: string, fn: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 5 * 60_000;
  for (;;) {
    try {
      await mkdir(dir);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const holder = Number(await readFile(path.join(dir, "pid"), "utf8").catch(() => "0"));
      if (holder > 0 && !isAlive(holder)) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the build lock ${dir} (held by pid ${holder})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    await writeFile(path.join(dir, "pid"), String(process.pid));
    await fn();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
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
