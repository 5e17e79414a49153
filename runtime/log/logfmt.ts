import { escapeText } from "../text/escape.ts";

/**
 * A log line's structured fields, appended as logfmt (` key=value`, as containerd writes them): ids, pids, durations.
 * undefined leaves the key out, so call sites can pass optional values as they are.
 */
export type Fields = Readonly<Record<string, string | number | boolean | undefined>>;

/** Characters of one field's value; a field is an id or a number, so what is longer is cut with a note. */
export const MAX_VALUE = 4096;

const KEY_UNSAFE = /[^A-Za-z0-9_.-]/g;
/** A value that needs quotes: empty, or holding a space (any Unicode one), a quote or an equals sign. */
const NEEDS_QUOTES = /^$|[\s"=]/u;

/** A key as logfmt allows it: anything but letters, digits, `_`, `.` and `-` becomes `_`. */
export function logfmtKey(key: string): string {
  return key.replace(KEY_UNSAFE, "_") || "_";
}

/**
 * A value as logfmt writes it: bare when it can be, else quoted. Control characters are escaped as escapeText does
 * (so `\` is `\\`) and a quote becomes `\"`: a value is always one token and reads back unambiguously.
 */
export function logfmtValue(value: string | number | boolean, defuse: (escaped: string) => string = (t) => t): string {
  const text = defuse(escapeText(String(value), { maxLength: MAX_VALUE }));
  return NEEDS_QUOTES.test(text) ? `"${text.replaceAll('"', '\\"')}"` : text;
}

/**
 * What defuses, in escaped text, every `key=` of these fields (`key\x3d`), so that text a guest put into a message or
 * another field cannot add a `sandbox=<other>` that `grep sandbox=<other>` would take for the line's own field.
 * `\x3d` cannot come from the text itself, where a backslash is already `\\`.
 */
export function fieldKeyDefuser(fields: Fields): (escaped: string) => string {
  const keys = Object.keys(fields).filter((k) => fields[k] !== undefined);
  if (!keys.length) return (t) => t;
  // Built only for a line with an `=` to defuse: most have none.
  let re: RegExp | undefined;
  return (t) => {
    if (!t.includes("=")) return t;
    re ??= new RegExp(`(${keys.map((k) => logfmtKey(k).replace(/[.-]/g, "\\$&")).join("|")})=`, "g");
    return t.replace(re, "$1\\x3d");
  };
}

/** ` k1=v1 k2="v 2"` for the defined fields, in their order; "" when there are none. */
export function formatFields(fields: Fields, defuse?: (escaped: string) => string): string {
  let out = "";
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined) out += ` ${logfmtKey(k)}=${logfmtValue(v, defuse)}`;
  }
  return out;
}
