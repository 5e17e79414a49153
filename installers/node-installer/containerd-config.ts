import { isDeepStrictEqual } from "node:util";
import { parse, stringify, TomlError } from "smol-toml";

// The installer never rewrites the operator's containerd config: it appends one delimited block (the drop-in's
// tables) after exactly one inserted "\n", so removing "\n" + block gives back the operator's bytes.

export const BLOCK_BEGIN =
  "# >>> kuasar-vmm: added by the kuasar-vmm node installer; its uninstall mode removes this block";
export const BLOCK_END = "# <<< kuasar-vmm";
/** Under the host root: the installer's state and the pre-install copy of the containerd config. */
export const STATE_DIR = "var/lib/kuasar-vmm-node-installer";

/** Refusals: the message names the file, the key and what to do; nothing was changed when one is thrown. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

type Table = Record<string, unknown>;

/** A table the block defines: its key path and its own values (sub-tables get their own entry). */
export interface BlockTable {
  path: string[];
  values: Table;
}

function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function parseToml(text: string, what: string): Table {
  try {
    return parse(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      throw new ConfigError(`${what} is not valid TOML (line ${err.line}, column ${err.column}: ${first})`);
    }
    throw err;
  }
}

/** `plugins."io.containerd.cri.v1.runtime".containerd` as TOML spells the path. */
export function formatKey(path: string[]): string {
  return path.map((k) => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k))).join(".");
}

/** Every table of the drop-in that holds values, parents first; top-level values (version) are not tables. */
export function dropInTables(dropIn: string, file: string): BlockTable[] {
  const out: BlockTable[] = [];
  const walk = (t: Table, path: string[]) => {
    const values = Object.fromEntries(Object.entries(t).filter(([, v]) => !isTable(v)));
    if (path.length > 0 && Object.keys(values).length > 0) out.push({ path, values });
    for (const [k, v] of Object.entries(t)) if (isTable(v)) walk(v, [...path, k]);
  };
  walk(parseToml(dropIn, file), []);
  if (out.length === 0) throw new ConfigError(`${file} defines no tables; it should hold the vmm proxy plugin`);
  return out;
}

export function renderBlock(tables: BlockTable[], withVersion: boolean): string {
  const parts = [BLOCK_BEGIN, ...(withVersion ? ["version = 3"] : [])];
  for (const t of tables) parts.push("", `[${formatKey(t.path)}]`, stringify(t.values).trimEnd());
  return `${parts.join("\n")}\n${BLOCK_END}\n`;
}

/** The config with the installer's block cut out, and whether there was one. */
export function splitManaged(text: string, file: string): { operator: string; hadBlock: boolean } {
  const begin = `\n${BLOCK_BEGIN}\n`;
  const at = text.indexOf(begin);
  const strayEnd = new RegExp(`(^|\\n)${escapeRe(BLOCK_END)}(\\n|$)`).test(text);
  if (at < 0) {
    if (text.startsWith(`${BLOCK_BEGIN}\n`) || strayEnd) throw damaged(file, "its start or end marker is missing");
    return { operator: text, hadBlock: false };
  }
  if (text.indexOf(begin, at + 1) >= 0) throw damaged(file, "it appears twice");
  const endRe = new RegExp(`\\n${escapeRe(BLOCK_END)}(\\n|$)`, "g");
  endRe.lastIndex = at + begin.length - 1;
  const end = endRe.exec(text);
  if (!end) throw damaged(file, `the line '${BLOCK_END}' that ends it is missing`);
  const rest = text.slice(end.index + end[0].length);
  if (new RegExp(`(^|\\n)${escapeRe(BLOCK_END)}(\\n|$)`).test(rest))
    throw damaged(file, "its end marker appears twice");
  return { operator: text.slice(0, at) + rest, hadBlock: true };
}

function damaged(file: string, why: string): ConfigError {
  return new ConfigError(
    `the kuasar-vmm block in ${file} is damaged (${why}); remove the lines from '${BLOCK_BEGIN}' to '${BLOCK_END}' by hand (the pre-install copy is under /${STATE_DIR} on the host), then run the installer again`,
  );
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export interface MergePlan {
  /** The config to write (operator's bytes, "\n", the block). */
  text: string;
  /** text differs from what is on disk (or nothing was on disk). */
  changed: boolean;
  /** The operator's part: the config as it would be without the installer. */
  operator: string;
  /** The file already held the installer's block. */
  hadBlock: boolean;
}

/**
 * Plans the merge of the drop-in's tables into a containerd config (undefined: the file does not exist). Refuses a
 * config it cannot parse, one that is not version 3, and one that already defines a key the block would define.
 */
export function planMerge(
  current: string | undefined,
  dropIn: string,
  opts: { file: string; dropInFile: string },
): MergePlan {
  const { file } = opts;
  const { operator, hadBlock } = splitManaged(current ?? "", file);
  const parsed = parseToml(operator, file);
  const empty = Object.keys(parsed).length === 0;
  if (!empty && parsed.version === undefined) {
    throw new ConfigError(
      `${file} has no 'version' key, i.e. it is a version 1 config; kuasar-vmm merges only into a version 3 config (containerd 2.x): convert it with 'containerd config migrate', review the result, replace ${file} with it, then run the installer again. Nothing was changed.`,
    );
  }
  if (!empty && parsed.version !== 3) {
    throw new ConfigError(
      `${file} has version = ${JSON.stringify(parsed.version)}; kuasar-vmm merges only into a version 3 config (containerd 2.x): convert it with 'containerd config migrate', review the result, replace ${file} with it, then run the installer again. Nothing was changed.`,
    );
  }
  const tables = dropInTables(dropIn, opts.dropInFile);
  for (const t of tables) checkFree(parsed, t.path, file);

  const text = `${operator}\n${renderBlock(tables, empty)}`;
  const expected = structuredClone(parsed);
  if (empty) expected.version = 3;
  for (const t of tables) Object.assign(ensureTable(expected, t.path), t.values);
  let merged: Table;
  try {
    merged = parseToml(text, `${file} with the kuasar-vmm block appended`);
  } catch (err) {
    throw new ConfigError(
      `${(err as Error).message}; a table on the path of ${tables.map((t) => `[${formatKey(t.path)}]`).join(" or ")} is probably written inline ({ ... }) or as dotted keys that TOML does not let a [header] extend: write it as a [header] table, then run the installer again. Nothing was changed.`,
    );
  }
  if (!isDeepStrictEqual(plain(merged), plain(expected))) {
    throw new ConfigError(
      `${file} with the kuasar-vmm block appended does not read back as the original plus the block; nothing was changed. Merge ${opts.dropInFile} into it by hand.`,
    );
  }
  return { text, changed: text !== current, operator, hadBlock };
}

/** The path must be free in the operator's config: no value there, and only tables on the way. */
function checkFree(parsed: Table, path: string[], file: string): void {
  let t: Table = parsed;
  for (let i = 0; i < path.length; i++) {
    const v = t[path[i]!];
    const key = formatKey(path.slice(0, i + 1));
    if (v === undefined) return;
    if (i === path.length - 1) {
      throw new ConfigError(
        `${file} already defines ${key}, which the kuasar-vmm installer did not write; remove it (the installer adds its own), then run the installer again. Nothing was changed.`,
      );
    }
    if (!isTable(v)) {
      throw new ConfigError(
        `${file} sets ${key} to a ${Array.isArray(v) ? "list" : typeof v}, where kuasar-vmm needs a table; fix that key, then run the installer again. Nothing was changed.`,
      );
    }
    t = v;
  }
}

/** smol-toml's tables have a null prototype; deep equality compares prototypes too. */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (isTable(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

function ensureTable(root: Table, path: string[]): Table {
  let t = root;
  for (const k of path) {
    if (!isTable(t[k])) t[k] = {};
    t = t[k] as Table;
  }
  return t;
}

/** containerd's `--version` line, e.g. "containerd github.com/containerd/containerd/v2 2.1.9+unknown". */
export function parseContainerdVersion(line: string): { major: number; minor: number; text: string } | undefined {
  const m = /(?:^|\s)v?(\d+)\.(\d+)(\.\d+)?(\S*)/.exec(line);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), text: `${m[1]}.${m[2]}${m[3] ?? ""}${m[4]}` };
}
