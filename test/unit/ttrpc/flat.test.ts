// The fast codec for flat messages against protobuf-es: the same bytes out, the same message (or the same error)
// back, for well-formed and for hostile input.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, createFileRegistry, type DescMessage, fromBinary, type Message, toBinary } from "@bufbuild/protobuf";
import {
  AnySchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { RequestSchema } from "../../../runtime/protos/gen/ttrpc/request_pb.ts";
import { type EchoMessage, EchoMessageSchema } from "../../../runtime/protos/gen/ttrpc/testing/echo_pb.ts";
import { decodeMessage, encodeMessage } from "../../../runtime/ttrpc/codec.ts";
import { BY_REFERENCE_MIN, decodeFlat, encodeFlat, flatSchema } from "../../../runtime/ttrpc/flat.ts";
import { fuzzSeed, rng, withSeed } from "../../../testkit/rng.ts";

// A flat message with everything the fast path handles: two bytes fields, 2-byte tags (fields 16 and 2047), a
// field numbered out of declaration order.
const T = FieldDescriptorProto_Type;
const wide = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "flat_test.proto",
    package: "flat.test",
    syntax: "proto3",
    messageType: [
      {
        name: "Wide",
        field: [
          ["a", 1, T.BYTES],
          ["s", 2, T.STRING],
          ["n", 16, T.UINT32],
          ["b", 2047, T.BYTES],
          ["f", 5, T.BOOL],
        ].map(([name, number, type]) => ({
          name: name as string,
          jsonName: name as string,
          number: number as number,
          type: type as FieldDescriptorProto_Type,
          label: FieldDescriptorProto_Label.OPTIONAL,
        })),
      },
    ],
  }),
  () => undefined,
);
const WideSchema = wide.getMessage("flat.test.Wide")!;

function flat(schema: DescMessage) {
  const f = flatSchema(schema);
  assert.ok(f, `${schema.typeName} is flat`);
  return f;
}

/** What protobuf-es does with `bytes`: the message, or the error's message. */
function reference(schema: DescMessage, bytes: Buffer): Message | string {
  try {
    return fromBinary(schema, bytes);
  } catch (err) {
    return (err as Error).message;
  }
}

function ours(schema: DescMessage, bytes: Buffer): Message | string {
  try {
    return decodeMessage(schema, bytes);
  } catch (err) {
    return (err as Error).message;
  }
}

describe("flat schemas", () => {
  it("takes messages of singular bytes, string, uint32 and bool fields only", () => {
    assert.ok(flatSchema(EchoMessageSchema));
    assert.ok(flatSchema(AnySchema));
    assert.ok(flatSchema(WideSchema));
    // repeated metadata and an int64 timeout: protobuf-es's business
    assert.equal(flatSchema(RequestSchema), undefined);
  });
});

describe("flat encoding", () => {
  it("writes exactly what toBinary writes when nothing goes by reference", () => {
    const random = rng(11);
    const texts = ["", "x", "ÿ€ü", "\ud800 lone surrogate", "long".repeat(40)];
    for (let i = 0; i < 500; i++) {
      const int = (n: number) => Math.floor(random() * n);
      const msg = create(EchoMessageSchema, {
        payload: Buffer.alloc(int(3) === 0 ? 0 : int(BY_REFERENCE_MIN), int(256)),
        seq: [0, 1, 127, 128, 2 ** 31, 2 ** 32 - 1][int(6)]!,
        text: texts[int(texts.length)]!,
        count: int(2 ** 20),
      });
      const parts = encodeFlat(flat(EchoMessageSchema), msg);
      assert.ok(parts, "the fast path took it");
      assert.deepEqual(Buffer.concat(parts), Buffer.from(toBinary(EchoMessageSchema, msg)), `message ${i}`);
    }
    const w = create(WideSchema, { s: "s", n: 300, f: true, a: Buffer.from([1]), b: Buffer.from([2, 3]) });
    assert.deepEqual(Buffer.concat(encodeFlat(flat(WideSchema), w)!), Buffer.from(toBinary(WideSchema, w)));
  });

  it("sends large bytes fields by reference, each after its own tag and length", () => {
    const a = Buffer.alloc(BY_REFERENCE_MIN, 1);
    const b = Buffer.alloc(100_000, 2);
    const w = create(WideSchema, { a, b, s: "text", n: 7, f: true });
    const parts = encodeFlat(flat(WideSchema), w)!;
    assert.equal(parts.length, 4, "[small fields + a's head], a, [b's head], b");
    assert.equal(parts[1], a, "a itself, not a copy");
    assert.equal(parts[3], b);
    assert.deepEqual(fromBinary(WideSchema, Buffer.concat(parts)), w);

    const any = create(AnySchema, { typeUrl: "types.containerd.io/x", value: Buffer.alloc(65_536, 3) });
    const anyParts = encodeMessage(AnySchema, any);
    assert.equal(anyParts.length, 2);
    assert.equal(anyParts[1], any.value);
    assert.deepEqual(fromBinary(AnySchema, Buffer.concat(anyParts)), any);
  });

  it("leaves values of the wrong type and unknown fields to protobuf-es", () => {
    const echo = flat(EchoMessageSchema);
    for (const bad of [{ seq: -1 }, { seq: 1.5 }, { seq: 2 ** 32 }, { text: 5 }, { payload: "str" }]) {
      const msg = { ...create(EchoMessageSchema), ...bad } as unknown as EchoMessage;
      assert.equal(encodeFlat(echo, msg), undefined, JSON.stringify(bad));
      const outcome = (encode: () => Uint8Array) => {
        try {
          return Buffer.from(encode());
        } catch (err) {
          return (err as Error).message;
        }
      };
      assert.deepEqual(
        outcome(() => Buffer.concat(encodeMessage(EchoMessageSchema, msg))),
        outcome(() => toBinary(EchoMessageSchema, msg)),
        JSON.stringify(bad),
      );
    }
    // unknown fields read from the wire go out again, as toBinary sends them
    const withUnknown = Buffer.concat([
      toBinary(EchoMessageSchema, create(EchoMessageSchema, { seq: 2 })),
      Buffer.from([0x48, 1]),
    ]);
    const msg = fromBinary(EchoMessageSchema, withUnknown);
    assert.equal(encodeFlat(echo, msg), undefined);
    assert.deepEqual(Buffer.concat(encodeMessage(EchoMessageSchema, msg)), withUnknown);
  });
});

describe("flat decoding", () => {
  it("decodes what toBinary writes into the message fromBinary returns, viewing the input", () => {
    const random = rng(12);
    for (let i = 0; i < 300; i++) {
      const int = (n: number) => Math.floor(random() * n);
      const w = create(WideSchema, {
        a: Buffer.alloc(int(5000), int(256)),
        b: Buffer.alloc(int(3), 9),
        s: ["", "ascii", "ÿ€ü"][int(3)]!,
        n: [0, 1, 300, 2 ** 32 - 1][int(4)]!,
        f: int(2) === 1,
      });
      const bytes = Buffer.from(toBinary(WideSchema, w));
      const fast = decodeFlat(flat(WideSchema), bytes);
      assert.ok(fast, `message ${i} took the fast path`);
      assert.deepEqual(fast, fromBinary(WideSchema, bytes), `message ${i}`);
    }
    const bytes = Buffer.from(toBinary(EchoMessageSchema, create(EchoMessageSchema, { payload: Buffer.alloc(9, 1) })));
    const msg = decodeMessage(EchoMessageSchema, bytes) as EchoMessage;
    assert.equal(msg.payload.buffer, bytes.buffer, "a view of the frame, not a copy");
  });

  it("leaves irregular input to protobuf-es: unknown fields, long varints, wrong wire types, bad UTF-8", () => {
    const echo = flat(EchoMessageSchema);
    const cases: Array<[string, number[]]> = [
      ["unknown field 9", [0x48, 0x01]],
      ["uint32 as a 10-byte varint", [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
      ["uint32 over 32 bits", [0x10, 0x80, 0x80, 0x80, 0x80, 0x10]],
      ["payload as a varint", [0x08, 0x05]],
      ["seq as length-delimited", [0x12, 0x01, 0x00]],
      ["text of invalid UTF-8", [0x1a, 0x02, 0xc3, 0x28]],
      ["payload running past the end", [0x0a, 0x05, 0x01]],
      ["a truncated varint", [0x10, 0x80]],
      ["field number 0", [0x02, 0x00]],
    ];
    for (const [what, bytes] of cases) {
      const buf = Buffer.from(bytes);
      assert.equal(decodeFlat(echo, buf), undefined, what);
      assert.deepEqual(ours(EchoMessageSchema, buf), reference(EchoMessageSchema, buf), what);
    }
  });

  const seed = fuzzSeed("flat decoding");
  it("agrees with protobuf-es on mutated and random input (attack)", () =>
    withSeed(seed, () => {
      const random = rng(seed);
      const int = (n: number) => Math.floor(random() * n);
      let fast = 0;
      for (let i = 0; i < 20_000; i++) {
        const schema = [EchoMessageSchema, AnySchema, WideSchema][int(3)]!;
        let bytes: Buffer;
        if (int(4) === 0) {
          bytes = Buffer.alloc(int(24));
          for (let j = 0; j < bytes.length; j++) bytes[j] = int(256);
        } else {
          const w = create(WideSchema, { a: Buffer.alloc(int(200), 1), s: "ÿ€", n: int(2 ** 32), f: true });
          bytes = Buffer.from(toBinary(WideSchema, w));
          for (let k = int(4); k > 0; k--) {
            const at = int(bytes.length);
            const r = int(3);
            if (r === 0) bytes[at] = bytes[at]! ^ (1 << int(8));
            else if (r === 1) bytes = bytes.subarray(0, at);
            else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([int(256)]), bytes.subarray(at)]);
          }
        }
        if (decodeFlat(flat(schema), bytes) !== undefined) fast++;
        assert.deepEqual(ours(schema, bytes), reference(schema, bytes), `input ${bytes.toString("hex")}`);
      }
      assert.ok(fast > 1000, `the fast path decoded ${fast} inputs`);
    }));
});
