import { type DescField, type DescMessage, fromBinary, type Message, ScalarType, toBinary } from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { BY_REFERENCE_MIN, decodeFlat, encodeFlat, flatSchema } from "./flat.ts";

const EMPTY = new Uint8Array(0);

const bytesFieldsCache = new WeakMap<DescMessage, readonly DescField[]>();

/** Top-level singular bytes fields whose empty value is simply absent from the wire. */
function bytesFields(schema: DescMessage): readonly DescField[] {
  let fields = bytesFieldsCache.get(schema);
  if (!fields) {
    fields = schema.fields.filter(
      (f) =>
        f.fieldKind === "scalar" &&
        f.scalar === ScalarType.BYTES &&
        f.oneof === undefined &&
        f.presence === FeatureSet_FieldPresence.IMPLICIT,
    );
    bytesFieldsCache.set(schema, fields);
  }
  return fields;
}

function varint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/**
 * Encodes a message as a list of chunks. Large top-level bytes fields (stdio
 * data, Any values) are left out of protobuf-es's encoding and appended after
 * it as their own chunk, so they reach the socket without a copy; fields may
 * come in any order on the wire, and an implicit-presence field left empty is
 * not encoded, so the result decodes to the same message.
 */
export function encodeMessage(schema: DescMessage, message: Message): Uint8Array[] {
  const flat = flatSchema(schema);
  const fast = flat && encodeFlat(flat, message);
  if (fast) return fast;
  const fields = bytesFields(schema);
  let large: Array<[DescField, Uint8Array]> | undefined;
  for (const f of fields) {
    const v = (message as unknown as Record<string, Uint8Array>)[f.localName];
    if (v !== undefined && v.length >= BY_REFERENCE_MIN) {
      large ??= [];
      large.push([f, v]);
    }
  }
  if (!large) return [toBinary(schema, message)];
  const rest = { ...message } as unknown as Record<string, unknown>;
  for (const [f] of large) rest[f.localName] = EMPTY;
  const parts: Uint8Array[] = [toBinary(schema, rest as unknown as Message)];
  for (const [f, v] of large) {
    parts.push(Uint8Array.from([...varint(f.number * 8 + 2), ...varint(v.length)]), v);
  }
  return parts;
}

/** Decodes like fromBinary (throwing its errors); bytes fields are views of `data`. */
export function decodeMessage(schema: DescMessage, data: Uint8Array): Message {
  const flat = flatSchema(schema);
  return (flat && decodeFlat(flat, data)) ?? fromBinary(schema, data);
}

export function byteLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}
