import { HYPERVISORS, type HypervisorKind } from "../hypervisor/names.ts";
import { TABLES } from "./schema.ts";
import { describeType, fieldDefault } from "./schema-lang.ts";

export interface SchemaRow {
  /** Dotted key path, e.g. hypervisor.vcpus. */
  key: string;
  type: string;
  /** Default per hypervisor that uses the key. */
  defaults: Partial<Record<HypervisorKind, unknown>>;
  hypervisors: HypervisorKind[];
  doc: string;
  deprecatedFor?: string;
  ignored?: string;
}

/** One row per key, in file order: what a configuration reference is generated from. */
export function describeSchema(): SchemaRow[] {
  const rows: SchemaRow[] = [];
  for (const [table, { fields, only: tableOnly }] of Object.entries(TABLES)) {
    for (const [name, f] of Object.entries(fields)) {
      const hypervisors = HYPERVISORS.filter(
        (hv) => (!tableOnly || tableOnly.includes(hv)) && (!f.only || f.only.includes(hv)),
      );
      rows.push({
        key: `${table}.${name}`,
        type: describeType(f),
        defaults: Object.fromEntries(hypervisors.map((hv) => [hv, fieldDefault<unknown>(f, hv)])),
        hypervisors,
        doc: f.doc,
        ...(f.deprecatedFor ? { deprecatedFor: f.deprecatedFor } : {}),
        ...(f.ignored ? { ignored: f.ignored } : {}),
      });
    }
  }
  return rows;
}
