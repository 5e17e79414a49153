/**
 * Every configuration key the daemon knows: the common tables (common-tables.ts) with each VMM's own keys, tables
 * and defaults put in from its descriptor (hypervisor/registry.ts). The loader validates against these tables,
 * defaultConfig() is built from them and the configuration reference is generated from them, so keys, defaults and
 * docs cannot drift apart.
 */
import { HYPERVISORS, type HypervisorKind } from "../hypervisor/names.ts";
import { type Config, VMMS } from "../hypervisor/registry.ts";
import { COMMON_TABLES, type TableSpec } from "./common-tables.ts";
import { type Field, type Fields, fieldDefault } from "./schema-lang.ts";

export type { Config };

const vmms = HYPERVISORS.map((name) => VMMS[name]);
const users = (key: string) => vmms.filter((v) => v.config.uses.includes(key)).map((v) => v.name);

/** A common table with each VMM's defaults (`per`) and, for optional keys, the VMMs that use them (`only`). */
function commonFields(table: string, fields: Fields): Fields {
  const out: Fields = {};
  for (const [name, f] of Object.entries(fields)) {
    const defaults = vmms.flatMap((v) => {
      const d = (v.config.defaults as Record<string, Record<string, unknown> | undefined>)[table]?.[name];
      return d === undefined ? [] : [[v.name, d] as const];
    });
    // A file's type defaults to the VMM it is for.
    const per = table === "hypervisor" && name === "type" ? HYPERVISORS.map((hv) => [hv, hv] as const) : defaults;
    out[name] = {
      ...f,
      ...(per.length > 0 ? { per: Object.fromEntries(per) } : {}),
      ...(f.optional ? { only: users(`${table}.${name}`) } : {}),
    } as Field;
  }
  return out;
}

/** Puts one VMM's own keys into a table, each after the key it names in `after` (else after the one before it). */
function withOwnKeys(table: string, fields: Fields, own: Fields, vmm: HypervisorKind): Fields {
  const order = Object.entries(fields);
  let at = order.length;
  for (const [name, f] of Object.entries(own)) {
    if (order.some(([n]) => n === name)) throw new Error(`${vmm}: ${table}.${name} is already a key`);
    if (f.after !== undefined) {
      const i = order.findIndex(([n]) => n === f.after);
      if (i < 0) throw new Error(`${vmm}: ${table}.${name} is to follow ${f.after}, which ${table} does not have`);
      at = i + 1;
    }
    order.splice(at++, 0, [name, { ...f, only: [vmm] }]);
  }
  return Object.fromEntries(order);
}

function assemble(): Record<string, TableSpec> {
  const tables: Record<string, TableSpec> = {};
  const optional = new Set<string>();
  for (const [path, spec] of Object.entries(COMMON_TABLES) as [string, TableSpec][]) {
    tables[path] = { fields: commonFields(path, spec.fields), ...(spec.optional ? { only: users(path) } : {}) };
    if (spec.optional) optional.add(path);
    for (const [name, f] of Object.entries(spec.fields)) if (f.optional) optional.add(`${path}.${name}`);
  }
  for (const v of vmms) {
    const unknown = v.config.uses.filter((key) => !optional.has(key));
    if (unknown.length > 0) throw new Error(`${v.name} uses ${unknown.join(", ")}: not optional keys or tables`);
    const { sandbox, hypervisor, tables: own } = v.config.keys;
    tables.sandbox = { fields: withOwnKeys("sandbox", tables.sandbox!.fields, sandbox, v.name) };
    tables.hypervisor = { fields: withOwnKeys("hypervisor", tables.hypervisor!.fields, hypervisor, v.name) };
    for (const [name, fields] of Object.entries(own)) {
      const path = `hypervisor.${name}`;
      if (tables[path]) throw new Error(`${v.name}: [${path}] is already a table`);
      tables[path] = { fields, only: [v.name] };
    }
  }
  return tables;
}

/** Tables by their dotted path ("sandbox", "hypervisor", "hypervisor.task", ...), in the reference's order. */
export const TABLES: Record<string, TableSpec> = assemble();

/** The object of a config that holds the table at a dotted path. */
export function tableIn(config: Config, tablePath: string): Record<string, unknown> {
  let t = config as unknown as Record<string, unknown>;
  for (const part of tablePath.split(".")) t = t[part] as Record<string, unknown>;
  return t;
}

/** The configuration a hypervisor runs with when the file sets nothing: the shipped installers/config/*.toml. */
export function defaultConfig(hv: HypervisorKind): Config {
  const config: Record<string, unknown> = { file: undefined };
  for (const [tablePath, { fields }] of Object.entries(TABLES)) {
    let t = config;
    for (const part of tablePath.split(".")) {
      t[part] ??= {};
      t = t[part] as Record<string, unknown>;
    }
    for (const [k, f] of Object.entries(fields)) t[k] = fieldDefault<unknown>(f, hv);
  }
  return config as unknown as Config;
}
