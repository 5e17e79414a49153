import { readFile } from "node:fs/promises";

/**
 * One requested symbol: `CONFIG_X=value` or `# CONFIG_X is not set` in a fragment file.
 * value is as .config spells it: "y", "m", a number, a quoted string; "n" stands for "is not set".
 */
export interface Assignment {
  symbol: string;
  value: string;
  file: string;
  line: number;
}

export class FragmentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FragmentError";
  }
}

const ASSIGN = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/;
const NOT_SET = /^# CONFIG_([A-Za-z0-9_]+) is not set$/;
const VALUE = /^(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$/;

/** Parses a fragment; file is used in error messages and recorded on every assignment. */
export function parseFragment(text: string, file: string): Assignment[] {
  const out: Assignment[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    const line = i + 1;
    const notSet = NOT_SET.exec(raw);
    if (notSet) {
      out.push({ symbol: notSet[1]!, value: "n", file, line });
      continue;
    }
    if (raw === "" || raw.startsWith("#")) continue;
    const m = ASSIGN.exec(raw);
    if (!m) {
      throw new FragmentError(
        `${file}:${line}: expected 'CONFIG_NAME=value' or '# CONFIG_NAME is not set', got '${raw}'`,
      );
    }
    const value = m[2]!;
    if (!VALUE.test(value)) {
      throw new FragmentError(
        `${file}:${line}: CONFIG_${m[1]} has value '${value}'; use y, m, n, a number, 0x-hex or a "quoted string" (no trailing comment)`,
      );
    }
    out.push({ symbol: m[1]!, value, file, line });
  }
  return out;
}

export async function readFragment(file: string, shownAs: string): Promise<Assignment[]> {
  const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new FragmentError(`cannot read kernel config fragment ${shownAs}: ${err.code ?? err.message}`);
  });
  return parseFragment(text, shownAs);
}

/**
 * Merges fragments into one request per symbol. The same symbol asked for twice with the same value is
 * fine (a hypervisor profile may restate a fragment); with different values it is an error, reported for
 * every such symbol at once with each file:line, before anything is handed to kconfig.
 */
export function mergeFragments(fragments: Assignment[][]): Map<string, Assignment> {
  const bySymbol = new Map<string, Assignment[]>();
  for (const a of fragments.flat()) {
    const list = bySymbol.get(a.symbol);
    if (list) list.push(a);
    else bySymbol.set(a.symbol, [a]);
  }
  const merged = new Map<string, Assignment>();
  const conflicts: string[] = [];
  for (const [symbol, list] of bySymbol) {
    if (new Set(list.map((a) => a.value)).size > 1) {
      conflicts.push(
        `  CONFIG_${symbol}: ${list.map((a) => `${showValue(a.value)} at ${a.file}:${a.line}`).join(", ")}`,
      );
    }
    merged.set(symbol, list[0]!);
  }
  if (conflicts.length > 0) {
    throw new FragmentError(
      `kernel config fragments disagree on ${conflicts.length} symbol(s); keep one value per symbol:\n${conflicts.join("\n")}`,
    );
  }
  return merged;
}

/** A request rendered the way .config spells it. */
export function renderAssignment(symbol: string, value: string): string {
  return value === "n" ? `# CONFIG_${symbol} is not set` : `CONFIG_${symbol}=${value}`;
}

export function showValue(value: string): string {
  return value === "n" ? "'is not set'" : value;
}
