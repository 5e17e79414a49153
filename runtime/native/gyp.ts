import { createHash } from "node:crypto";
import { existsSync, realpathSync } from "node:fs";
import { copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

/** What the addon builds share: finding node-gyp and Node's headers, and taking turns in a source dir. */

const nativeDir = path.dirname(fileURLToPath(import.meta.url));
const includeDir = path.join(nativeDir, "include");

/** The agent's addons besides vsock (which the host uses too and buildNative builds): each runtime/native/<name>. */
export const AGENT_ADDONS = ["pty", "ns"] as const;

function npmOnPath(): string[] {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    const npm = path.join(dir, "npm");
    if (!dir || !existsSync(npm)) continue;
    // npm's bin links to <npm>/bin/npm-cli.js.
    return [path.resolve(realpathSync(npm), "../../node_modules/node-gyp/bin/node-gyp.js")];
  }
  return [];
}

// node-gyp ships inside npm rather than as a project dependency.
function nodeGyp(): string {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.resolve(path.dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
    // The pinned node (node_modules/.bin) carries no npm: then the npm on PATH's copy, or Debian's.
    ...npmOnPath(),
    "/usr/share/nodejs/node-gyp/bin/node-gyp.js",
  ];
  try {
    candidates.push(createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js"));
  } catch {
    // Not installed as a package; npm's bundled copy above is the usual one.
  }
  const found = candidates.find((c): c is string => c !== undefined && existsSync(c));
  if (!found) {
    throw new Error(
      `node-gyp not found (looked at: ${candidates.filter(Boolean).join(", ")}); it ships with npm: install npm (apt-get install -y npm) or set npm_config_node_gyp`,
    );
  }
  return found;
}

// Headers of the running Node when installed beside it (Debian's nodejs-dev, official tarballs); otherwise node-gyp downloads them.
function nodeDir(): string | undefined {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), "..");
  return existsSync(path.join(prefix, "include", "node", "node_api.h")) ? prefix : undefined;
}

// node-gyp builds in the source directory, so concurrent builds (parallel test files) take turns.
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

/**
 * Builds runtime/native/<name> (binding.gyp, <name>.c and the shared headers in include/) with node-gyp in its
 * own build/ directory, where the loader also finds it, and copies it to <outDir>/<name>.node, which it returns.
 * node-gyp runs only when the sources, Node, its headers or the C compiler changed.
 */
export async function buildGypAddon(name: string, outDir: string): Promise<string> {
  const dir = path.join(nativeDir, name);
  const built = path.join(dir, "build", "Release", `${name}.node`);
  const stampFile = path.join(dir, "build", ".kuasar-stamp");
  const nodedir = nodeDir();
  // Every C file of the addon (an addon may be split into several), then the shared headers.
  const own = (await readdir(dir)).filter((f) => /\.[ch]$/.test(f)).sort();
  const sources = [path.join(dir, "binding.gyp"), ...own.map((f) => path.join(dir, f))];
  for (const f of (await readdir(includeDir)).sort()) sources.push(path.join(includeDir, f));
  const h = createHash("sha256");
  for (const f of sources) h.update(`${path.basename(f)}\0`).update(await readFile(f));
  const cc = await execa(process.env.CC ?? "cc", ["--version"], { reject: false, all: true, stdin: "ignore" });
  const ccVersion = (cc.all ?? "").split("\n")[0] ?? "";
  const key = h.update(`\0${process.version}\0${nodedir ?? "download"}\0${ccVersion}`).digest("hex");
  if ((await readFile(stampFile, "utf8").catch(() => "")) !== key || !existsSync(built)) {
    await withLock(path.join(dir, ".build.lock"), async () => {
      if ((await readFile(stampFile, "utf8").catch(() => "")) === key && existsSync(built)) return;
      const args = [nodeGyp(), "rebuild", ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
      const r = await execa(process.execPath, args, { cwd: dir, reject: false, all: true, stdin: "ignore" });
      if (r.failed) {
        throw new Error(
          `building the ${name} addon with node-gyp failed (in ${dir}, exit ${r.exitCode}):\n${r.all ?? ""}`,
        );
      }
      await writeFile(stampFile, key);
    });
  }
  await mkdir(outDir, { recursive: true });
  const out = path.join(outDir, `${name}.node`);
  if (path.resolve(out) !== built) {
    const tmp = `${out}.tmp-${process.pid}`;
    await copyFile(built, tmp);
    await rename(tmp, out);
  }
  return out;
}
