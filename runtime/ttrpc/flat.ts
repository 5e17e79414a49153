// A fast codec for "flat" messages, those whose every field is a singular, implicit-presence bytes, string, uint32
// or bool: stream payloads such as google.protobuf.Any and transfer.Data. protobuf-es's reflective codec costs
// several µs and a dozen objects per message, which at 64 KiB messages is a quarter of the receiving side's CPU. The
// fast path covers only the regular case and answers undefined for anything else (an unknown field, another wire
// type, a long varint, a value of the wrong type, unknown fields to re-encode); the caller then uses protobuf-es, so
// results and errors stay protobuf-es's own.

import { create, type DescMessage, type Message, ScalarType } from "@bufbuild/protobuf";
import { getTextEncoding } from "@bufbuild/protobuf/wire";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { varintSize, writeVarint } from "./varint.ts";

/** Bytes fields at least this long are sent by reference instead of being copied into the encoding. */
export const BY_REFERENCE_MIN = 2 << 10;

const Kind = { Bytes: 0, String: 1, Uint32: 2, Bool: 3 } as const;
type Kind = (typeof Kind)[keyof typeof Kind];

const KINDS: Partial<Record<ScalarType, Kind>> = {
  [ScalarType.BYTES]: Kind.Bytes,
  [ScalarType.STRING]: Kind.String,
  [ScalarType.UINT32]: Kind.Uint32,
  [ScalarType.BOOL]: Kind.Bool,
};

interface FlatField {
  readonly name: string;
  readonly kind: Kind;
  /** The field's tag on the wire (number and wire type), as a varint of 1 or 2 bytes. */
  readonly tag: number;
  readonly tagSize: number;
  /** Strings only: reject invalid UTF-8, as protobuf-es does for this field. */
  readonly strict: boolean;
}

export interface FlatSchema {
  readonly schema: DescMessage;
  /** In field-number order, the order protobuf-es writes them in. */
  readonly fields: readonly FlatField[];
  readonly byTag: ReadonlyMap<number, FlatField>;
}

const cache = new WeakMap<DescMessage, FlatSchema | null>();

/** The schema's flat form, or undefined when a field is of a kind the fast path leaves to protobuf-es. */
export function flatSchema(schema: DescMessage): FlatSchema | undefined {
  let flat = cache.get(schema);
  if (flat === undefined) {
    flat = compile(schema);
    cache.set(schema, flat);
  }
  return flat ?? undefined;
}

function compile(schema: DescMessage): FlatSchema | null {
  const fields: FlatField[] = [];
  for (const f of [...schema.fields].sort((a, b) => a.number - b.number)) {
    const kind = f.fieldKind === "scalar" ? KINDS[f.scalar] : undefined;
    // tags of up to 2 bytes: field numbers below 2048
    if (kind === undefined || f.oneof !== undefined || f.presence !== FeatureSet_FieldPresence.IMPLICIT) return null;
    if (f.number >= 2048) return null;
    const tag = (f.number << 3) | (kind === Kind.Bytes || kind === Kind.String ? 2 : 0);
    fields.push({ name: f.localName, kind, tag, tagSize: tag < 0x80 ? 1 : 2, strict: f.utf8Validation });
  }
  return { schema, fields, byTag: new Map(fields.map((f) => [f.tag, f])) };
}

/**
 * Decodes `buf` like protobuf-es's fromBinary (bytes fields are views of `buf`), or returns undefined when the
 * input is not the regular case; protobuf-es then decodes it, or throws its error.
 */
export function decodeFlat(flat: FlatSchema, buf: Uint8Array): Message | undefined {
  const msg = create(flat.schema) as unknown as Record<string, unknown>;
  const end = buf.length;
  let pos = 0;
  while (pos < end) {
    let tag = buf[pos++]!;
    if (tag >= 0x80) {
      if (pos === end || buf[pos]! >= 0x80) return undefined;
      tag = (tag & 0x7f) | (buf[pos++]! << 7);
    }
    const f = flat.byTag.get(tag);
    if (f === undefined) return undefined;
    // a varint of at most 5 bytes that fits in 32 bits; anything longer goes to protobuf-es
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      if (pos === end) return undefined;
      const b = buf[pos++]!;
      if (shift === 28 && b > 0x0f) return undefined;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    switch (f.kind) {
      case Kind.Bytes:
      case Kind.String: {
        if (v > end - pos) return undefined;
        const bytes = buf.subarray(pos, pos + v);
        pos += v;
        if (f.kind === Kind.Bytes) msg[f.name] = bytes;
        else {
          try {
            msg[f.name] = getTextEncoding().decodeUtf8(bytes, f.strict);
          } catch {
            return undefined;
          }
        }
        break;
      }
      case Kind.Uint32:
        msg[f.name] = v;
        break;
      case Kind.Bool:
        if (v > 1) return undefined;
        msg[f.name] = v === 1;
        break;
    }
  }
  return msg as unknown as Message;
}

function writeTag(buf: Buffer, off: number, f: FlatField): number {
  if (f.tagSize === 1) {
    buf[off] = f.tag;
    return off + 1;
  }
  buf[off] = (f.tag & 0x7f) | 0x80;
  buf[off + 1] = f.tag >> 7;
  return off + 2;
}

/**
 * Encodes `message` as protobuf-es's toBinary would, as a list of chunks: bytes fields of BY_REFERENCE_MIN and
 * more are not copied but follow as chunks of their own, after the other fields (fields may come in any order on
 * the wire). Returns undefined when a value is not of its field's type or the message carries unknown fields.
 */
export function encodeFlat(flat: FlatSchema, message: Message): Uint8Array[] | undefined {
  const values = message as unknown as Record<string, unknown>;
  if ((message as { $unknown?: unknown[] }).$unknown?.length) return undefined;
  let size = 0;
  // the first field sent by reference has its tag and length at the end of the prefix
  let firstLarge: FlatField | undefined;
  for (const f of flat.fields) {
    const v = values[f.name];
    switch (f.kind) {
      case Kind.Bytes:
        if (!(v instanceof Uint8Array)) return undefined;
        if (v.length === 0) continue;
        if (v.length < BY_REFERENCE_MIN) size += f.tagSize + varintSize(v.length) + v.length;
        else if (firstLarge === undefined) {
          firstLarge = f;
          size += f.tagSize + varintSize(v.length);
        }
        break;
      case Kind.String: {
        if (typeof v !== "string") return undefined;
        if (v.length === 0) continue;
        const n = Buffer.byteLength(v);
        size += f.tagSize + varintSize(n) + n;
        break;
      }
      case Kind.Uint32:
        if (typeof v !== "number" || v >>> 0 !== v) return undefined;
        if (v !== 0) size += f.tagSize + varintSize(v);
        break;
      case Kind.Bool:
        if (typeof v !== "boolean") return undefined;
        if (v) size += f.tagSize + 1;
        break;
    }
  }
  const prefix = Buffer.allocUnsafe(size);
  let off = 0;
  for (const f of flat.fields) {
    const v = values[f.name];
    switch (f.kind) {
      case Kind.Bytes: {
        const b = v as Uint8Array;
        if (b.length === 0 || b.length >= BY_REFERENCE_MIN) continue;
        off = writeVarint(prefix, writeTag(prefix, off, f), b.length);
        prefix.set(b, off);
        off += b.length;
        break;
      }
      case Kind.String: {
        const s = v as string;
        if (s.length === 0) continue;
        off = writeVarint(prefix, writeTag(prefix, off, f), Buffer.byteLength(s));
        off += prefix.write(s, off);
        break;
      }
      case Kind.Uint32:
        if (v !== 0) off = writeVarint(prefix, writeTag(prefix, off, f), v as number);
        break;
      case Kind.Bool:
        if (v) off = writeVarint(prefix, writeTag(prefix, off, f), 1);
        break;
    }
  }
  const parts: Uint8Array[] = [prefix];
  if (firstLarge === undefined) return parts;
  for (const f of flat.fields) {
    const b = values[f.name] as Uint8Array;
    if (f.kind !== Kind.Bytes || b.length < BY_REFERENCE_MIN) continue;
    if (f === firstLarge) writeVarint(prefix, writeTag(prefix, off, f), b.length);
    else {
      const head = Buffer.allocUnsafe(f.tagSize + varintSize(b.length));
      writeVarint(head, writeTag(head, 0, f), b.length);
      parts.push(head);
    }
    parts.push(b);
  }
  return parts;
}
