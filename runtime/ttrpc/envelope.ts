// Hand-written codec for the two envelopes every call pays for (ttrpc.Request
// and ttrpc.Response, see runtime/protos/ttrpc/request.proto). It avoids the
// reflection of the generated codec on the hot path and never copies the
// payload: encoders return [prefix, payload] for a vectored write, decoders
// return views. The status (error path only) goes through the generated code.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "../protos/gen/google/rpc/status_pb.ts";
import { byteLength } from "./codec.ts";
import { Code, TtrpcError } from "./errors.ts";
import { varintSize, writeVarint } from "./varint.ts";

const TAG_SERVICE = 0x0a; // field 1, length-delimited
const TAG_METHOD = 0x12; // field 2, length-delimited
const TAG_PAYLOAD = 0x1a; // field 3, length-delimited
const TAG_TIMEOUT = 0x20; // field 4, varint
const TAG_METADATA = 0x2a; // field 5, length-delimited
const TAG_KV_KEY = 0x0a;
const TAG_KV_VALUE = 0x12;
const TAG_STATUS = 0x0a; // Response field 1
const TAG_RESPONSE_PAYLOAD = 0x12; // Response field 2

export interface DecodedRequest {
  service: string;
  method: string;
  payload: Buffer;
  /** Whether field 3 was on the wire: a client-streaming call's first message rides in it only then. */
  hasPayload: boolean;
  /** Nanoseconds; 0 = none, negative = already expired. */
  timeoutNano: number;
  metadata: ReadonlyMap<string, readonly string[]>;
}

const NO_METADATA: ReadonlyMap<string, readonly string[]> = new Map();

export interface Status {
  code: number;
  message: string;
  details: readonly Any[];
}

export interface DecodedResponse {
  status: Status | undefined;
  payload: Buffer;
}

function writeBytesField(buf: Buffer, off: number, tag: number, bytes: Buffer): number {
  buf[off++] = tag;
  off = writeVarint(buf, off, bytes.length);
  return off + bytes.copy(buf, off);
}

function fieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

/**
 * The service and method fields, which a client reuses for every call of a
 * method.
 */
export function encodeRoute(service: string, method: string): Buffer {
  const s = Buffer.from(service);
  const m = Buffer.from(method);
  const buf = Buffer.allocUnsafe(fieldSize(s.length) + fieldSize(m.length));
  writeBytesField(buf, writeBytesField(buf, 0, TAG_SERVICE, s), TAG_METHOD, m);
  return buf;
}

/** Encodes a Request as [prefix, ...payload]; the payload chunks are not copied. */
export function encodeRequest(
  route: Buffer,
  payload: readonly Uint8Array[],
  timeoutNano: number,
  metadata: ReadonlyArray<readonly [string, string]>,
): Uint8Array[] {
  const payloadLength = byteLength(payload);
  let size = route.length;
  if (timeoutNano > 0) size += 1 + varintSize(timeoutNano);
  const kvs: Buffer[] = [];
  for (const [key, value] of metadata) {
    const k = Buffer.from(key);
    const v = Buffer.from(value);
    const kv = Buffer.allocUnsafe(fieldSize(k.length) + fieldSize(v.length));
    writeBytesField(kv, writeBytesField(kv, 0, TAG_KV_KEY, k), TAG_KV_VALUE, v);
    kvs.push(kv);
    size += fieldSize(kv.length);
  }
  // proto3 leaves an empty bytes field off the wire; Go's server relies on that
  // to tell "no first message" for client-streaming calls.
  if (payloadLength > 0) size += 1 + varintSize(payloadLength);
  const prefix = Buffer.allocUnsafe(size);
  let off = route.copy(prefix, 0);
  if (timeoutNano > 0) {
    prefix[off++] = TAG_TIMEOUT;
    off = writeVarint(prefix, off, timeoutNano);
  }
  for (const kv of kvs) off = writeBytesField(prefix, off, TAG_METADATA, kv);
  if (payloadLength === 0) return [prefix];
  prefix[off++] = TAG_PAYLOAD;
  writeVarint(prefix, off, payloadLength);
  return [prefix, ...payload];
}

/** Encodes a Response as [prefix, ...payload]; a status is only written when not OK. */
export function encodeResponse(status: Status | undefined, payload: readonly Uint8Array[]): Uint8Array[] {
  const payloadLength = byteLength(payload);
  let statusBytes: Uint8Array | undefined;
  if (status !== undefined && status.code !== Code.OK) {
    statusBytes = toBinary(
      StatusSchema,
      create(StatusSchema, { code: status.code, message: status.message, details: [...status.details] }),
    );
  }
  const size =
    (statusBytes ? fieldSize(statusBytes.length) : 0) + (payloadLength > 0 ? 1 + varintSize(payloadLength) : 0);
  const prefix = Buffer.allocUnsafe(size);
  let off = 0;
  if (statusBytes) {
    prefix[off++] = TAG_STATUS;
    off = writeVarint(prefix, off, statusBytes.length);
    off += Buffer.from(statusBytes.buffer, statusBytes.byteOffset, statusBytes.length).copy(prefix, off);
  }
  if (payloadLength === 0) return [prefix];
  prefix[off++] = TAG_RESPONSE_PAYLOAD;
  writeVarint(prefix, off, payloadLength);
  return [prefix, ...payload];
}

/** Minimal protobuf reader over a Buffer; throws on truncation. */
class Reader {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly end: number = buf.length,
  ) {}

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Varint as a number; 10-byte varints (negative int64) are read as signed. */
  varint(): number {
    const buf = this.buf;
    const start = this.pos;
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const b = buf[this.pos++]!;
      if (i === 9) {
        if (b >= 0x80) break;
        return this.signed64(start);
      }
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new Error("varint longer than 10 bytes");
  }

  /** Slow path: the full 64 bits, exactly, as a signed number. */
  private signed64(start: number): number {
    let v = 0n;
    for (let i = 0, p = start; i < 10; i++, p++) v |= BigInt(this.buf[p]! & 0x7f) << BigInt(7 * i);
    return Number(BigInt.asIntN(64, v));
  }

  lengthDelimited(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    if (len < 0 || start + len > this.end) throw new Error("length-delimited field runs past the end");
    this.pos = start + len;
    return [start, start + len];
  }

  string(): string {
    const [s, e] = this.lengthDelimited();
    return this.buf.toString("utf8", s, e);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Error("fixed-size field runs past the end");
  }
}

const EMPTY: Buffer = Buffer.alloc(0);

/** Decodes a Request. Throws a plain Error describing the defect on malformed input. */
export function decodeRequest(buf: Buffer): DecodedRequest {
  const r = new Reader(buf);
  const req: DecodedRequest = {
    service: "",
    method: "",
    payload: EMPTY,
    hasPayload: false,
    timeoutNano: 0,
    metadata: NO_METADATA,
  };
  let metadata: Map<string, string[]> | undefined;
  while (!r.done) {
    const tag = r.varint();
    switch (tag) {
      case TAG_SERVICE:
        req.service = r.string();
        break;
      case TAG_METHOD:
        req.method = r.string();
        break;
      case TAG_PAYLOAD: {
        const [s, e] = r.lengthDelimited();
        req.payload = buf.subarray(s, e);
        req.hasPayload = true;
        break;
      }
      case TAG_TIMEOUT:
        req.timeoutNano = r.varint();
        break;
      case TAG_METADATA: {
        const [s, e] = r.lengthDelimited();
        const kv = new Reader(buf, e);
        kv.pos = s;
        let key = "";
        let value = "";
        while (!kv.done) {
          const t = kv.varint();
          if (t === TAG_KV_KEY) key = kv.string();
          else if (t === TAG_KV_VALUE) value = kv.string();
          else kv.skip(t & 7);
        }
        key = key.toLowerCase();
        if (!metadata) {
          metadata = new Map();
          req.metadata = metadata;
        }
        const values = metadata.get(key);
        if (values) values.push(value);
        else metadata.set(key, [value]);
        break;
      }
      default:
        r.skip(tag & 7);
    }
  }
  return req;
}

/** Decodes a Response. Throws a plain Error describing the defect on malformed input. */
export function decodeResponse(buf: Buffer): DecodedResponse {
  const r = new Reader(buf);
  let status: Status | undefined;
  let payload = EMPTY;
  while (!r.done) {
    const tag = r.varint();
    if (tag === TAG_STATUS) {
      const [s, e] = r.lengthDelimited();
      const st = fromBinary(StatusSchema, buf.subarray(s, e));
      status = { code: st.code, message: st.message, details: st.details };
    } else if (tag === TAG_RESPONSE_PAYLOAD) {
      const [s, e] = r.lengthDelimited();
      payload = buf.subarray(s, e);
    } else {
      r.skip(tag & 7);
    }
  }
  return { status, payload };
}

/** The error a non-OK status stands for, or undefined for success. */
export function statusError(status: Status | undefined): TtrpcError | undefined {
  if (status === undefined || status.code === Code.OK) return undefined;
  return new TtrpcError(status.code, status.message, status.details);
}
