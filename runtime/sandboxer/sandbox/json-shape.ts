/**
 * Checks for JSON the daemon reads back from its own files: each returns the value typed or throws naming the field
 * (`at`, e.g. runtime.vm.helpers[0].pid) and what it holds. Shape<T> lists one check per key of T, so tsc fails here
 * when T gains or loses a field, or a field checked as optional becomes required.
 */
export type Check<T> = (v: unknown, at: string) => T;
export type Shape<T> = { [K in keyof T]-?: Check<T[K]> };

function fail(at: string, v: unknown, expected: string): never {
  if (v === undefined) throw new Error(`${at} is missing (${expected} expected)`);
  const shown = JSON.stringify(v);
  throw new Error(`${at} is ${shown.length > 60 ? `${shown.slice(0, 60)}...` : shown}, ${expected} expected`);
}

export const string: Check<string> = (v, at) => (typeof v === "string" ? v : fail(at, v, "a string"));

export function integer(min: number): Check<number> {
  return (v, at) =>
    Number.isSafeInteger(v) && (v as number) >= min ? (v as number) : fail(at, v, `an integer >= ${min}`);
}

export function oneOf<const V extends string>(values: readonly V[]): Check<V> {
  return (v, at) => (values.includes(v as V) ? (v as V) : fail(at, v, `one of ${values.join(", ")}`));
}

export function optional<T>(check: Check<T>): Check<T | undefined> {
  return (v, at) => (v === undefined ? undefined : check(v, at));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function arrayOf<T>(check: Check<T>): Check<T[]> {
  return (v, at) => (Array.isArray(v) ? v.map((e, i) => check(e, `${at}[${i}]`)) : fail(at, v, "an array"));
}

export function recordOf<T>(check: Check<T>): Check<Record<string, T>> {
  return (v, at) => {
    if (!isObject(v)) return fail(at, v, "an object");
    return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, check(e, `${at}.${k}`)]));
  };
}

/** An object with the fields of `shape`; fields it does not name are kept as they are (a newer daemon's). */
export function object<T>(shape: Shape<T>): Check<T> {
  return (v, at) => {
    if (!isObject(v)) return fail(at, v, "an object");
    const out: Record<string, unknown> = { ...v };
    for (const [key, check] of Object.entries<Check<unknown>>(shape)) {
      const value = check(v[key], `${at}.${key}`);
      if (value !== undefined) out[key] = value;
    }
    // Every key of T was checked above.
    return out as T;
  };
}

/** A union told apart by its `tag` field, one shape per tag value. */
export function tagged<T>(tag: string, variants: Record<string, Check<T>>): Check<T> {
  return (v, at) => {
    if (!isObject(v)) return fail(at, v, "an object");
    const t = v[tag];
    const check = typeof t === "string" && Object.hasOwn(variants, t) ? variants[t] : undefined;
    return check ? check(v, at) : fail(`${at}.${tag}`, t, `one of ${Object.keys(variants).join(", ")}`);
  };
}

export const scalar: Check<string | number | boolean> = (v, at) =>
  typeof v === "string" || typeof v === "number" || typeof v === "boolean"
    ? v
    : fail(at, v, "a string, number or boolean");
