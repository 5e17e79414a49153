/** One TOML value checked against its field: the value as loaded, or what was expected and found. */
import { TomlDate } from "smol-toml";
import { describeType, type Field } from "./schema-lang.ts";
import { didYouMean } from "./suggest.ts";

export type Raw = Record<string, unknown>;

export const isTable = (v: unknown): v is Raw =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof TomlDate);

/** A TOML value as a message names it: the value and its TOML type. */
export function found(v: unknown): string {
  if (typeof v === "string") return `${JSON.stringify(v)} (string)`;
  if (typeof v === "bigint") return `${v} (integer)`;
  if (typeof v === "number") return Number.isInteger(v) ? `${v}.0 (float)` : `${v} (float)`;
  if (typeof v === "boolean") return `${v} (boolean)`;
  if (v instanceof TomlDate) return `${v.toISOString()} (date-time)`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (isTable(v)) return "a table";
  return String(v);
}

export type Checked = { ok: true; value: unknown } | { ok: false; problem: string };

export function checkValue(f: Field, v: unknown): Checked {
  const expected = (hint = "") => ({
    ok: false as const,
    problem: `expected ${describeType(f)}, found ${found(v)}${hint}`,
  });
  switch (f.type) {
    case "string": {
      if (typeof v !== "string") return expected();
      const bad = f.check?.(v);
      return bad ? { ok: false, problem: `${bad}, found ${found(v)}` } : { ok: true, value: v };
    }
    case "integer": {
      if (typeof v !== "bigint") return expected(typeof v === "string" ? "; write it without quotes" : "");
      if (v < BigInt(f.min) || v > BigInt(f.max))
        return { ok: false, problem: `out of range: expected ${describeType(f)}, found ${v}` };
      return { ok: true, value: Number(v) };
    }
    case "boolean":
      if (typeof v !== "boolean") return expected(v === "true" || v === "false" ? "; write it without quotes" : "");
      return { ok: true, value: v };
    case "enum": {
      if (typeof v !== "string") return expected();
      const value = (f.values as readonly string[]).includes(v) ? v : f.aliases?.[v];
      if (value === undefined) return expected(didYouMean(v, [...f.values, ...Object.keys(f.aliases ?? {})]));
      return { ok: true, value };
    }
    case "string-list":
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) return expected();
      return { ok: true, value: [...v] };
  }
}
