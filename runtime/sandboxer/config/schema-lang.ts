/**
 * How a configuration key is described: its type, default, allowed values and meaning. The tables in
 * common-tables.ts and each VMM's own keys (hypervisor/<vmm>/config.ts) are written in it.
 */
import type { HypervisorKind } from "../hypervisor/names.ts";

interface FieldBase<T> {
  doc: string;
  default: T;
  /** Kuasar's key name kept for compatibility: its value moves to this key when that one is not set. */
  deprecatedFor?: string;
  /** Accepted for compatibility with Kuasar's configs but has no effect here; says why when set. */
  ignored?: string;
  /** A shared key only some VMMs read: those whose descriptor lists it in `uses`. */
  optional?: boolean;
  /**
   * For a VMM's own key: the key of the table it is listed after in the reference (keys that belong together stay
   * together). Without it a key follows the VMM's key before it, or goes last.
   */
  after?: string;
  /** Set by config/schema.ts from the descriptors: defaults that differ from `default` for some VMMs. */
  per?: Partial<Record<HypervisorKind, T>>;
  /** Set by config/schema.ts from the descriptors: the VMMs that read the key; absent: all of them. */
  only?: readonly HypervisorKind[];
}

export interface StringField extends FieldBase<string> {
  type: "string";
  /** Extra check on the value; returns what is wrong with it. */
  check?: (v: string) => string | undefined;
}
export interface IntegerField extends FieldBase<number> {
  type: "integer";
  min: number;
  max: number;
}
export interface BooleanField extends FieldBase<boolean> {
  type: "boolean";
}
export interface EnumField<V extends string = string> extends FieldBase<V> {
  type: "enum";
  values: readonly V[];
  /** Other spellings accepted and normalised (Kuasar writes "virtio-blk" and "VirtioBlk" for the same driver). */
  aliases?: Readonly<Record<string, V>>;
}
export interface StringListField extends FieldBase<string[]> {
  type: "string-list";
}
export type Field = StringField | IntegerField | BooleanField | EnumField | StringListField;
export type Fields = Record<string, Field>;

type Opts<T> = Pick<FieldBase<T>, "deprecatedFor" | "ignored" | "optional" | "after">;
export const str = (
  doc: string,
  def: string,
  o: Opts<string> & { check?: StringField["check"] } = {},
): StringField => ({
  type: "string",
  doc,
  default: def,
  ...o,
});
export const int = (doc: string, def: number, min: number, max: number, o: Opts<number> = {}): IntegerField => ({
  type: "integer",
  doc,
  default: def,
  min,
  max,
  ...o,
});
export const bool = (doc: string, def: boolean, o: Opts<boolean> = {}): BooleanField => ({
  type: "boolean",
  doc,
  default: def,
  ...o,
});
export function oneOf<const V extends string>(
  doc: string,
  values: readonly V[],
  def: V,
  o: Opts<V> & { aliases?: Readonly<Record<string, V>> } = {},
): EnumField<V> {
  return { type: "enum", doc, values, default: def, ...o };
}
export const strList = (doc: string, def: string[], o: Opts<string[]> = {}): StringListField => ({
  type: "string-list",
  doc,
  default: def,
  ...o,
});

export const absoluteOrEmpty = (v: string) =>
  v === "" || v.startsWith("/") ? undefined : "must be an absolute path (or empty to turn the feature off)";
export const absolute = (v: string) => (v.startsWith("/") ? undefined : "must be an absolute path");

/** The value type a field spec describes. */
type ValueOf<F> =
  F extends EnumField<infer V>
    ? V
    : F extends IntegerField
      ? number
      : F extends BooleanField
        ? boolean
        : F extends StringListField
          ? string[]
          : string;
/** The values a table of fields holds once loaded. */
export type Model<T> = { -readonly [K in keyof T]: ValueOf<T[K]> };

export function fieldDefault<T>(f: FieldBase<T>, hv: HypervisorKind): T {
  const v = f.per?.[hv] ?? f.default;
  return Array.isArray(v) ? ([...v] as T) : v;
}

export function describeType(f: Field): string {
  switch (f.type) {
    case "integer":
      return `integer ${f.min}..${f.max}`;
    case "enum":
      return `one of ${f.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "string-list":
      return "array of strings";
    default:
      return f.type;
  }
}
