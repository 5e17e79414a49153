import { readFile } from "node:fs/promises";
import { parse, TomlError } from "smol-toml";
import type { HypervisorKind } from "../hypervisor/names.ts";
import { vmmOf } from "../hypervisor/registry.ts";
import { crossCheck } from "./cross-check.ts";
import { detectKind } from "./detect-kind.ts";
import { type Config, defaultConfig, TABLES, tableIn } from "./schema.ts";
import { didYouMean } from "./suggest.ts";
import { checkValue, found, isTable, type Raw } from "./value.ts";

/** Everything wrong with a configuration file, reported together. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
    readonly warnings: string[] = [],
  ) {
    const bullets = (xs: string[]) => xs.map((x) => `  - ${x}`).join("\n");
    super(
      `invalid configuration ${file}:\n${bullets(problems)}\n` +
        (warnings.length ? `also:\n${bullets(warnings)}\n` : "") +
        "(every key, its type and default are listed in runtime/sandboxer/config/schema.ts)",
    );
    this.name = "ConfigError";
  }
}

export interface Loaded {
  config: Config;
  /** Unknown keys (with a "did you mean"), keys for another hypervisor, deprecated or ignored keys. */
  warnings: string[];
}

/**
 * Reads and validates the daemon's TOML configuration. A file that is missing or unreadable is an error, and so is a
 * helper uid range that takes ids of users, groups or subordinate ranges in etcDir's passwd, group, subuid, subgid.
 */
export async function loadConfig(file: string, etcDir = "/etc"): Promise<Loaded> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === "ENOENT"
        ? "no such file: create it (installers/config/config_<hypervisor>.toml are complete examples) or pass another --config"
        : `cannot read it: ${e.message}`;
    throw new ConfigError(file, [why]);
  }
  const loaded = parseConfig(text, file);
  const taken = (await vmmOf(loaded.config.hypervisor.type).config.checkHost?.(loaded.config, etcDir)) ?? [];
  if (taken.length > 0) throw new ConfigError(file, taken, loaded.warnings);
  return loaded;
}

const list = (hvs: readonly HypervisorKind[]) => hvs.join(" and ");

/** Validates a TOML document against the schema; file names the source in every message. */
export function parseConfig(text: string, file: string): Loaded {
  let doc: Raw;
  try {
    doc = parse(text, { integersAsBigInt: true, unsafeKeyBehaviour: "throw" });
  } catch (err) {
    if (err instanceof TomlError) {
      throw new ConfigError(file, [`line ${err.line}, column ${err.column}: ${err.message.split("\n")[0]}`]);
    }
    throw new ConfigError(file, [(err as Error).message]);
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  const warn = (msg: string) => warnings.push(`${file}: ${msg}`);

  // Gather the raw tables by dotted path, reporting tables nobody knows.
  const raw = new Map<string, Raw>();
  const known = Object.keys(TABLES);
  const walk = (table: Raw, prefix: string) => {
    for (const [k, v] of Object.entries(table)) {
      const p = prefix ? `${prefix}.${k}` : k;
      if (!isTable(v)) continue;
      if (known.includes(p)) {
        raw.set(p, v);
        walk(v, p);
      } else if (!prefix || known.includes(prefix)) {
        const fields = prefix ? Object.keys(TABLES[prefix]!.fields) : [];
        // A sub-table under a known table is unknown unless it is a field given the wrong type (checked below).
        if (!fields.includes(k)) {
          const siblings = known.filter((t) => t.split(".").length === p.split(".").length && t.startsWith(prefix));
          warn(`unknown table [${p}] ignored${didYouMean(p, siblings)}`);
        }
      }
    }
  };
  walk(doc, "");
  for (const [k, v] of Object.entries(doc)) {
    if (!isTable(v)) {
      if (known.includes(k)) problems.push(`${k}: expected a table ([${k}]), found ${found(v)}`);
      else warn(`unknown key ${k} ignored${didYouMean(k, ["sandbox", "hypervisor"])}`);
    }
  }

  const hRaw = raw.get("hypervisor") ?? {};
  let kind = detectKind(hRaw, problems);
  if (hRaw.type !== undefined) {
    const c = checkValue(TABLES.hypervisor!.fields.type!, hRaw.type);
    if (c.ok) kind = c.value as HypervisorKind;
    else problems.push(`hypervisor.type: ${c.problem}`);
  }
  if (!kind) throw new ConfigError(file, problems, warnings);

  const config = defaultConfig(kind);
  config.file = file;
  const explicit = new Set<string>();
  // Kuasar's older key names are folded into their replacements before those are checked.
  const movedFrom = new Map<string, string>();
  for (const [name, f] of Object.entries(TABLES.hypervisor!.fields)) {
    const v = hRaw[name];
    if (!f.deprecatedFor || v === undefined || v === "" || (f.only && !f.only.includes(kind))) continue;
    const [tablePath, key] = [
      f.deprecatedFor.slice(0, f.deprecatedFor.lastIndexOf(".")),
      f.deprecatedFor.split(".").pop()!,
    ];
    const table = raw.get(tablePath) ?? {};
    if (table[key] === undefined) {
      table[key] = v;
      raw.set(tablePath, table);
      movedFrom.set(f.deprecatedFor, `hypervisor.${name}`);
      warn(`hypervisor.${name} is Kuasar's older name for ${f.deprecatedFor}; its value is used there`);
    } else {
      warn(`hypervisor.${name} is Kuasar's older name for ${f.deprecatedFor}, which is also set; ${name} is ignored`);
    }
  }

  for (const [tablePath, { fields, only: tableOnly }] of Object.entries(TABLES)) {
    const table = raw.get(tablePath);
    if (!table) continue;
    if (tableOnly && !tableOnly.includes(kind)) {
      warn(`[${tablePath}] applies to ${list(tableOnly)} only; ignored for ${kind}`);
      continue;
    }
    const target = tableIn(config, tablePath);
    const subTables = known.filter((t) => t.startsWith(`${tablePath}.`)).map((t) => t.slice(tablePath.length + 1));
    for (const [name, v] of Object.entries(table)) {
      const keyPath = `${tablePath}.${name}`;
      const f = fields[name];
      if (!f) {
        // Unknown sub-tables were reported while walking the document.
        if (!subTables.includes(name) && !isTable(v)) {
          warn(`unknown key ${keyPath} ignored${didYouMean(name, Object.keys(fields))}`);
        }
        continue;
      }
      if (f.deprecatedFor || (tablePath === "hypervisor" && name === "type")) continue;
      if (f.only && !f.only.includes(kind)) {
        warn(`${keyPath} applies to ${list(f.only)} only; ignored for ${kind}`);
        continue;
      }
      const c = checkValue(f, v);
      if (!c.ok) {
        const origin = movedFrom.get(keyPath);
        problems.push(`${origin ? `${origin} (moved to ${keyPath})` : keyPath}: ${c.problem}`);
        continue;
      }
      if (f.ignored) {
        if (JSON.stringify(c.value) !== JSON.stringify(target[name])) {
          warn(`${keyPath} has no effect: ${f.ignored}`);
        }
        continue;
      }
      target[name] = c.value;
      explicit.add(keyPath);
    }
  }

  crossCheck(config, kind, explicit, problems);
  if (problems.length > 0) throw new ConfigError(file, problems, warnings);
  return { config, warnings };
}
