import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { AGENT_ADDONS, buildGypAddon } from "./gyp.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const initSource = path.join(here, "init", "init.c");

export interface BuildNativeOptions {
  /** Where vsock.node and init are placed. */
  outDir: string;
  /** The agent command init runs by default (compiled in); defaults to init.c's INIT_AGENT_ARGV. */
  agentArgv?: string[];
}

export interface NativeArtifacts {
  vsockAddon: string;
  init: string;
}

const C_FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"];

/**
 * Builds the AF_VSOCK addon (node-gyp, in runtime/native/vsock/build, where the loader also finds it) and the
 * static init, then copies both to outDir. Each is rebuilt only when its sources, flags or toolchain changed.
 */
export async function buildNative(opts: BuildNativeOptions): Promise<NativeArtifacts> {
  await mkdir(opts.outDir, { recursive: true });
  const stampFile = path.join(opts.outDir, ".native-stamp.json");
  const stamp = await readStamp(stampFile);
  const cc = process.env.CC ?? "cc";
  const ccVersion = await toolLine(cc, ["--version"], "gcc");
  const init = path.join(opts.outDir, "init");

  const defines = opts.agentArgv ? [`-DINIT_AGENT_ARGV=${agentArgvDefine(opts.agentArgv)}`] : [];
  const initKey = await digest([initSource], [ccVersion, ...C_FLAGS, ...defines]);
  if (stamp.init !== initKey || !existsSync(init)) {
    const tmp = `${init}.tmp-${process.pid}`;
    await run(cc, ["-static", ...C_FLAGS, ...defines, "-o", tmp, initSource], "compiling init");
    await rename(tmp, init);
    stamp.init = initKey;
    await writeStamp(stampFile, stamp);
  }

  return { vsockAddon: await buildGypAddon("vsock", opts.outDir), init };
}

/** A C initializer list of string literals; JSON string escapes are valid C for printable ASCII. */
function agentArgvDefine(argv: string[]): string {
  if (argv.length === 0) throw new Error("buildNative: agentArgv must name at least the program to run");
  for (const a of argv) {
    if (!/^[\x20-\x7e]*$/.test(a))
      throw new Error(`buildNative: agentArgv entry ${JSON.stringify(a)} must be printable ASCII`);
  }
  return argv.map((a) => JSON.stringify(a)).join(",");
}

async function toolLine(tool: string, args: string[], pkg: string): Promise<string> {
  const r = await execa(tool, args, { reject: false, all: true, stdin: "ignore" });
  if ((r as { code?: string }).code === "ENOENT") {
    throw new Error(`C compiler '${tool}' not found: install it with apt-get install -y ${pkg} (or set CC)`);
  }
  return (r.all ?? "").split("\n")[0] ?? "";
}

async function run(file: string, args: string[], what: string, cwd?: string): Promise<void> {
  const r = await execa(file, args, { reject: false, all: true, stdin: "ignore", ...(cwd ? { cwd } : {}) });
  if (r.failed) {
    throw new Error(`${what} failed (${[file, ...args].join(" ")}, exit ${r.exitCode ?? r.signal}):\n${r.all ?? ""}`);
  }
}

async function digest(files: string[], extra: string[]): Promise<string> {
  const h = createHash("sha256");
  for (const f of files) h.update(`${path.basename(f)}\0`).update(await readFile(f));
  for (const e of extra) h.update(`\0${e}`);
  return h.digest("hex");
}

interface Stamp {
  init?: string;
}

async function readStamp(file: string): Promise<Stamp> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as Stamp;
  } catch {
    return {};
  }
}

async function writeStamp(file: string, stamp: Stamp): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(stamp)}\n`);
  await rename(tmp, file);
}

// `npx tsx runtime/native/build.ts [outDir]` builds everything here for development (default outDir: runtime/native/build).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outDir = path.resolve(process.argv[2] ?? path.join(here, "build"));
  const addons = Promise.all(AGENT_ADDONS.map((name) => buildGypAddon(name, outDir)));
  Promise.all([buildNative({ outDir }), addons]).then(
    ([a, agent]) => console.log([`vsock addon: ${a.vsockAddon}`, `init: ${a.init}`, ...agent].join("\n")),
    (e: Error) => {
      console.error(e.message);
      process.exitCode = 1;
    },
  );
}
