import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

/** What both addon builds share: finding node-gyp and Node's headers, and taking turns in a source dir. */

// node-gyp ships inside npm rather than as a project dependency.
export function nodeGyp(): string {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.resolve(path.dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
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
export function nodeDir(): string | undefined {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), "..");
  return existsSync(path.join(prefix, "include", "node", "node_api.h")) ? prefix : undefined;
}

// node-gyp builds in the source directory, so concurrent builds (parallel test files) take turns.
export async function withLock(dir: string, fn: () => Promise<void>): Promise<void> {
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
