import { lstat, open, readlink } from "node:fs/promises";
import path from "node:path";
import { $quiet } from "../lib/shell.ts";

/** What the dynamic loader reads from an ELF (what `readelf -d -l` shows). */
export interface ElfInfo {
  interpreter?: string;
  needed: string[];
  soname?: string;
  rpath: string[];
  runpath: string[];
}

export async function isElf(file: string): Promise<boolean> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return bytesRead === 4 && buf.toString("latin1") === "\x7fELF";
  } finally {
    await fh.close();
  }
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_SONAME = 14n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;

/**
 * Reads the interpreter (PT_INTERP) and the dynamic section (NEEDED, SONAME, RPATH, RUNPATH) of a 64-bit
 * little-endian ELF: what `readelf -d -l` prints, without the ~100 ms readelf spends on node's notes, since this
 * runs on every build's key path.
 */
export async function readElf(file: string): Promise<ElfInfo> {
  const fh = await open(file, "r");
  try {
    const read = async (offset: number, length: number) => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (bytesRead < length) throw new Error(`${file}: truncated ELF (wanted ${length} bytes at offset ${offset})`);
      return buf;
    };
    if (!(await isElf(file))) throw new Error(`${file} is not an ELF file`);
    const eh = await read(0, 64);
    if (eh[4] !== 2 || eh[5] !== 1) throw new Error(`${file}: only 64-bit little-endian ELF is supported`);
    const phoff = Number(eh.readBigUInt64LE(0x20));
    const phentsize = eh.readUInt16LE(0x36);
    const phnum = eh.readUInt16LE(0x38);
    const ph = await read(phoff, phentsize * phnum);
    const segs = Array.from({ length: phnum }, (_, i) => {
      const o = i * phentsize;
      return {
        type: ph.readUInt32LE(o),
        offset: Number(ph.readBigUInt64LE(o + 8)),
        vaddr: Number(ph.readBigUInt64LE(o + 16)),
        filesz: Number(ph.readBigUInt64LE(o + 32)),
      };
    });
    const info: ElfInfo = { needed: [], rpath: [], runpath: [] };
    const interp = segs.find((s) => s.type === PT_INTERP);
    if (interp) info.interpreter = (await read(interp.offset, interp.filesz)).toString("latin1").replace(/\0.*$/s, "");
    const dyn = segs.find((s) => s.type === PT_DYNAMIC);
    if (!dyn) return info;
    const d = await read(dyn.offset, dyn.filesz);
    const tags: [bigint, bigint][] = [];
    for (let o = 0; o + 16 <= d.length; o += 16) {
      const tag = d.readBigInt64LE(o);
      if (tag === 0n) break;
      tags.push([tag, d.readBigUInt64LE(o + 8)]);
    }
    const strtab = Number(tags.find(([t]) => t === DT_STRTAB)?.[1] ?? -1);
    const load = segs.find((s) => s.type === PT_LOAD && strtab >= s.vaddr && strtab < s.vaddr + s.filesz);
    if (!load) throw new Error(`${file}: the dynamic string table is not in any loaded segment`);
    const size = (await fh.stat()).size;
    const str = async (at: bigint) => {
      const pos = load.offset + strtab - load.vaddr + Number(at);
      const buf = await read(pos, Math.max(0, Math.min(4096, size - pos)));
      const end = buf.indexOf(0);
      if (end < 0) throw new Error(`${file}: unterminated dynamic string at ${at}`);
      return buf.toString("utf8", 0, end);
    };
    for (const [tag, val] of tags) {
      if (tag === DT_NEEDED) info.needed.push(await str(val));
      else if (tag === DT_SONAME) info.soname = await str(val);
      else if (tag === DT_RPATH) info.rpath.push(...(await str(val)).split(":").filter(Boolean));
      else if (tag === DT_RUNPATH) info.runpath.push(...(await str(val)).split(":").filter(Boolean));
    }
    return info;
  } finally {
    await fh.close();
  }
}

/** A library the loader maps for a host ELF: where the loader found it (kept as the guest path) and the file it is. */
export interface ClosureLib {
  /** Absolute path as the loader names it on the host, e.g. /lib/x86_64-linux-gnu/libc.so.6; reused inside the guest. */
  path: string;
  /** The ELF that pulled it in first (for error messages). */
  neededBy: string;
}

/**
 * The shared-library closure of host ELFs as the host loader resolves it (ldd's output format), interpreter
 * included. A static binary has an empty closure; an unresolvable library is an error naming the ELF and the library.
 */
export async function lddClosure(files: string[]): Promise<ClosureLib[]> {
  // In parallel, and through the ELF's own loader in trace mode (~10 ms) rather than ldd, a shell script doing the
  // same (~70 ms): this runs on every build's key path. Objects without an interpreter (addons) go through ldd.
  const outputs = await Promise.all(
    files.map(async (file) => {
      const elf = await readElf(file);
      if (!elf.interpreter && elf.needed.length === 0) return { file, lines: [] };
      // Trace mode is for the loader alone, so it goes on the loader's command line: in the environment it would
      // trace the shell zx runs commands through (and, for ldd, the shell running ldd) instead.
      const cmd = elf.interpreter ?? "ldd";
      const r = await (elf.interpreter
        ? $quiet({ nothrow: true })`LD_TRACE_LOADED_OBJECTS=1 ${cmd} ${file}`
        : $quiet({ nothrow: true })`ldd ${file}`);
      if (r.exitCode === 127) {
        throw new Error(`${cmd} is not installed; install it with: apt-get install -y libc-bin`);
      }
      const out = r.stdall;
      if (/statically linked/.test(out)) return { file, lines: [] };
      if (r.exitCode !== 0) throw new Error(`${cmd} ${file} failed (exit ${r.exitCode}):\n${out}`);
      return { file, lines: out.split("\n") };
    }),
  );
  const libs = new Map<string, ClosureLib>();
  for (const { file, lines } of outputs) {
    for (const line of lines) {
      const missing = /^\s*(\S+) => not found/.exec(line);
      if (missing) {
        throw new Error(
          `${file} needs ${missing[1]}, which the host loader cannot find (ldd ${file}); install the package that ships it`,
        );
      }
      // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or the interpreter "/lib64/ld-linux-x86-64.so.2 (0x...)"
      const m = /^\s*(?:\S+ => )?(\/\S+) \(0x[0-9a-f]+\)/.exec(line);
      if (m && !libs.has(m[1]!)) libs.set(m[1]!, { path: m[1]!, neededBy: file });
    }
  }
  return [...libs.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Debian's multiarch triplet for the loader's built-in search path (the guest has no ld.so.cache). */
export function multiarchTriplet(arch: string = process.arch): string {
  const triplets: Record<string, string> = { x64: "x86_64-linux-gnu", arm64: "aarch64-linux-gnu" };
  const t = triplets[arch];
  if (!t) throw new Error(`no multiarch library directory known for architecture '${arch}' (supported: x64, arm64)`);
  return t;
}

/** glibc's system search path on Debian, searched after RPATH/RUNPATH when there is no /etc/ld.so.cache. */
export function systemLibDirs(triplet: string = multiarchTriplet()): string[] {
  return [`/lib/${triplet}`, `/usr/lib/${triplet}`, "/lib", "/usr/lib"];
}

/**
 * Resolves an absolute guest path inside root, following symlinks (absolute targets are relative to root),
 * and returns the host path of a regular file there, or undefined when nothing is there.
 */
export async function resolveInRoot(root: string, guestPath: string): Promise<string | undefined> {
  let parts = guestPath.split("/").filter(Boolean);
  let done: string[] = [];
  let hops = 0;
  while (parts.length > 0) {
    const name = parts.shift()!;
    if (name === ".") continue;
    if (name === "..") {
      done.pop();
      continue;
    }
    const host = path.join(root, ...done, name);
    const st = await lstat(host).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (++hops > 40) return undefined;
      const target = await readlink(host);
      parts = [...target.split("/").filter(Boolean), ...parts];
      if (target.startsWith("/")) done = [];
      continue;
    }
    done.push(name);
    if (parts.length > 0 && !st.isDirectory()) return undefined;
    if (parts.length === 0) return st.isFile() ? host : undefined;
  }
  return undefined;
}

/** One unmet dependency of an ELF inside a root. */
export interface ElfProblem {
  elf: string;
  missing: string;
  searched: string[];
}

/**
 * Checks that every ELF (guest paths) finds its interpreter and each NEEDED library inside root, the way
 * the guest's loader would: RPATH (when there is no RUNPATH), RUNPATH, then the system directories.
 * A NEEDED entry naming the interpreter's own soname (libc.so.6 needs ld-linux-x86-64.so.2) is satisfied by the
 * already-loaded interpreter.
 */
export async function checkElfClosure(root: string, elfs: string[], libDirs = systemLibDirs()): Promise<ElfProblem[]> {
  const problems: ElfProblem[] = [];
  const infos = new Map<string, ElfInfo>();
  const info = async (host: string) => {
    const known = infos.get(host);
    if (known) return known;
    const i = await readElf(host);
    infos.set(host, i);
    return i;
  };
  const interpreterSonames = new Set<string>();
  for (const elf of elfs) {
    const interp = (await info(path.join(root, elf))).interpreter;
    if (!interp) continue;
    const host = await resolveInRoot(root, interp);
    if (!host) {
      problems.push({ elf, missing: interp, searched: [interp] });
      continue;
    }
    interpreterSonames.add((await info(host)).soname ?? path.basename(interp));
  }
  for (const elf of elfs) {
    const i = await info(path.join(root, elf));
    const origin = path.posix.dirname(`/${elf}`);
    const expand = (d: string) => d.replace(/\$\{?ORIGIN\}?/g, origin);
    const dirs = [...(i.runpath.length ? [] : i.rpath), ...i.runpath].map(expand).concat(libDirs);
    for (const lib of i.needed) {
      if (interpreterSonames.has(lib)) continue;
      const candidates = lib.includes("/") ? [lib] : dirs.map((d) => path.posix.join(d, lib));
      let found = false;
      for (const c of candidates) if (!found && (await resolveInRoot(root, c))) found = true;
      if (!found) problems.push({ elf, missing: lib, searched: lib.includes("/") ? [lib] : dirs });
    }
  }
  return problems;
}
