import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { type Assignment, FragmentError, renderAssignment, showValue } from "./fragment.ts";

/** symbol -> value from a generated .config; "n" for `# CONFIG_X is not set`. */
export function parseDotConfig(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const notSet = /^# CONFIG_([A-Za-z0-9_]+) is not set$/.exec(line);
    if (notSet) out.set(notSet[1]!, "n");
    const set = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (set) out.set(set[1]!, set[2]!);
  }
  return out;
}

export interface Mismatch {
  request: Assignment;
  /** undefined: the symbol is not in .config at all (its dependencies are off, so it is invisible). */
  actual: string | undefined;
}

/**
 * Every requested symbol must end up with exactly the requested value. A symbol missing from .config
 * counts as "n": kconfig writes nothing for a symbol whose dependencies are off.
 */
export function verifyConfig(requested: Iterable<Assignment>, actual: Map<string, string>): Mismatch[] {
  const out: Mismatch[] = [];
  for (const req of requested) {
    const got = actual.get(req.symbol);
    if ((got ?? "n") !== req.value) out.push({ request: req, actual: got });
  }
  return out.sort((a, b) => a.request.file.localeCompare(b.request.file) || a.request.line - b.request.line);
}

export function formatMismatches(mismatches: Mismatch[], configFile: string): string {
  const rows = mismatches.map(({ request: r, actual }) => {
    const got =
      actual === undefined
        ? "it is absent (a dependency is off, so kconfig dropped it)"
        : `it is ${actual === "n" ? "not set" : actual}`;
    return `  ${r.file}:${r.line}: ${renderAssignment(r.symbol, r.value)} requested, but ${got}`;
  });
  return (
    `${mismatches.length} requested kernel config symbol(s) did not get their value in ${configFile}:\n${rows.join("\n")}\n` +
    `Add the missing dependencies (see 'depends on' in the symbol's Kconfig) to the fragments, or drop the request.`
  );
}

/**
 * Every `config`/`menuconfig` name declared in a Kconfig* file below root. Other architectures' Kconfig
 * files are included: the check is for typos and renamed symbols, the value check catches the rest.
 */
export async function kconfigSymbols(root: string): Promise<Set<string>> {
  const out = new Set<string>();
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  for (const e of entries) {
    if (!e.isFile() || !e.name.startsWith("Kconfig")) continue;
    // Node 20 names the directory `path`; later versions `parentPath`.
    const dir = (e as { parentPath?: string }).parentPath ?? e.path;
    const text = await readFile(path.join(dir, e.name), "utf8");
    for (const m of text.matchAll(/^[ \t]*(?:menu)?config[ \t]+([A-Za-z0-9_]+)[ \t]*$/gm)) out.add(m[1]!);
  }
  if (out.size === 0)
    throw new FragmentError(`no Kconfig files with config entries below ${root}: is it a kernel source tree?`);
  return out;
}

/** Requests naming a symbol no Kconfig declares (a typo, or renamed in this kernel version). */
export function unknownSymbols(requested: Iterable<Assignment>, known: Set<string>): Assignment[] {
  return [...requested].filter((a) => !known.has(a.symbol));
}

export function formatUnknown(unknown: Assignment[], sourceDir: string): string {
  const rows = unknown.map((a) => `  ${a.file}:${a.line}: CONFIG_${a.symbol} (${showValue(a.value)})`);
  return `${unknown.length} requested kernel config symbol(s) are declared in no Kconfig file of ${sourceDir}:\n${rows.join("\n")}\nFix the spelling or remove the request (the symbol may have been renamed in this kernel version).`;
}
