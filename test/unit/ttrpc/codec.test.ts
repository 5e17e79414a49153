// Frame parser, message encoding, and the hand-written Request/Response
// envelope codec checked against the generated ttrpc.Request/Response code.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import { RequestSchema, ResponseSchema } from "../../../runtime/protos/gen/ttrpc/request_pb.ts";
import { EchoMessageSchema } from "../../../runtime/protos/gen/ttrpc/testing/echo_pb.ts";
import { byteLength, encodeMessage } from "../../../runtime/ttrpc/codec.ts";
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  encodeRoute,
  statusError,
} from "../../../runtime/ttrpc/envelope.ts";
import { Code, TtrpcError } from "../../../runtime/ttrpc/errors.ts";
import { encodeHeader, FrameError, FrameParser, MAX_DATA_LENGTH } from "../../../runtime/ttrpc/frame.ts";

interface Seen {
  frames: Array<{ id: number; type: number; flags: number; data: Buffer }>;
  oversize: Array<{ id: number; length: number }>;
}

function parser(): { p: FrameParser; seen: Seen } {
  const seen: Seen = { frames: [], oversize: [] };
  const p = new FrameParser({
    onFrame: (id, type, flags, data) => seen.frames.push({ id, type, flags, data: Buffer.from(data) }),
    onOversize: (id, _type, _flags, length) => seen.oversize.push({ id, length }),
  });
  return { p, seen };
}

const frame = (id: number, type: number, flags: number, data: Buffer) =>
  Buffer.concat([encodeHeader(data.length, id, type, flags), data]);

describe("frame parser", () => {
  it("parses frames split at every possible byte boundary", () => {
    const stream = Buffer.concat([
      frame(1, 1, 0, Buffer.from("hello")),
      frame(3, 3, 4, Buffer.alloc(0)),
      frame(5, 2, 1, Buffer.alloc(300, 7)),
    ]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const { p, seen } = parser();
      p.push(stream.subarray(0, cut));
      p.push(stream.subarray(cut));
      assert.deepEqual(
        seen.frames.map((f) => [f.id, f.type, f.flags, f.data.length]),
        [
          [1, 1, 0, 5],
          [3, 3, 4, 0],
          [5, 2, 1, 300],
        ],
        `cut at ${cut}`,
      );
      assert.equal(seen.frames[0]!.data.toString(), "hello");
      assert.ok(p.idle);
    }
  });

  it("parses a stream fed one byte at a time", () => {
    const stream = Buffer.concat([frame(7, 1, 2, Buffer.from("abc")), frame(9, 3, 0, Buffer.from("de"))]);
    const { p, seen } = parser();
    for (const b of stream) p.push(Buffer.from([b]));
    assert.deepEqual(
      seen.frames.map((f) => [f.id, f.data.toString()]),
      [
        [7, "abc"],
        [9, "de"],
      ],
    );
  });

  it("hands out views of the chunk for frames that lie inside it", () => {
    const chunk = frame(1, 1, 0, Buffer.from("zero-copy"));
    let view: Buffer | undefined;
    new FrameParser({ onFrame: (_i, _t, _f, d) => (view = d), onOversize: () => {} }).push(chunk);
    assert.equal(view!.buffer, chunk.buffer);
  });

  it("accepts exactly the maximum length and skips larger frames, then resumes", () => {
    const { p, seen } = parser();
    const max = Buffer.alloc(MAX_DATA_LENGTH, 1);
    p.push(frame(1, 1, 0, max));
    const over = MAX_DATA_LENGTH + 1;
    const overFrame = Buffer.concat([encodeHeader(over, 3, 1, 0), Buffer.alloc(over, 2)]);
    // feed the oversize frame in pieces, followed by a normal frame in the same chunk as its tail
    p.push(overFrame.subarray(0, 1000));
    p.push(Buffer.concat([overFrame.subarray(1000), frame(5, 1, 0, Buffer.from("next"))]));
    assert.equal(seen.frames.length, 2);
    assert.equal(seen.frames[0]!.data.length, MAX_DATA_LENGTH);
    assert.deepEqual(seen.oversize, [{ id: 3, length: over }]);
    assert.equal(seen.frames[1]!.data.toString(), "next");
  });

  it("keeps assembled frames intact when many share a slab", () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const sent: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const data = Buffer.alloc(rand(300_000));
      for (let j = 0; j < data.length; j += 997) data[j] = rand(256);
      data.writeUInt32BE(i, 0);
      sent.push(data);
    }
    const stream = Buffer.concat(sent.map((d, i) => frame(2 * i + 1, 3, 0, d)));
    const views: Buffer[] = [];
    const p = new FrameParser({ onFrame: (_i, _t, _f, d) => views.push(d), onOversize: () => {} });
    for (let off = 0; off < stream.length; ) {
      const n = 1 + rand(100_000);
      p.push(stream.subarray(off, off + n));
      off += n;
    }
    assert.equal(views.length, sent.length);
    for (const [i, v] of views.entries()) assert.ok(v.equals(sent[i]!), `frame ${i} corrupted`);
  });

  it("rejects a header whose reserved first byte is set", () => {
    const { p } = parser();
    const bad = Buffer.alloc(10);
    bad[0] = 1;
    assert.throws(() => p.push(bad), FrameError);
  });
});

describe("request envelope", () => {
  const route = encodeRoute("containerd.task.v3.Task", "Create");

  it("encodes what the generated codec decodes", () => {
    const payload = Buffer.from([1, 2, 3, 4]);
    const bytes = Buffer.concat(
      encodeRequest(route, [payload], 1_500_000_000, [
        ["containerd-namespace-ttrpc", "k8s.io"],
        ["x", "1"],
        ["x", "2"],
      ]),
    );
    const req = fromBinary(RequestSchema, bytes);
    assert.equal(req.service, "containerd.task.v3.Task");
    assert.equal(req.method, "Create");
    assert.deepEqual(Buffer.from(req.payload), payload);
    assert.equal(req.timeoutNano, 1_500_000_000n);
    assert.deepEqual(
      req.metadata.map((kv) => [kv.key, kv.value]),
      [
        ["containerd-namespace-ttrpc", "k8s.io"],
        ["x", "1"],
        ["x", "2"],
      ],
    );
  });

  it("leaves an empty payload and a zero timeout off the wire", () => {
    const bytes = Buffer.concat(encodeRequest(route, [], 0, []));
    assert.deepEqual(bytes, route);
    const decoded = decodeRequest(bytes);
    assert.equal(decoded.hasPayload, false);
    assert.equal(decoded.payload.length, 0);
  });

  it("decodes what the generated codec encodes, lowercasing metadata keys", () => {
    const bytes = Buffer.from(
      toBinary(
        RequestSchema,
        create(RequestSchema, {
          service: "grpc.SandboxService",
          method: "Check",
          payload: new Uint8Array(0),
          timeoutNano: 2n ** 40n,
          metadata: [
            { key: "Containerd-Namespace-TTRPC", value: "k8s.io" },
            { key: "a", value: "1" },
          ],
        }),
      ),
    );
    const req = decodeRequest(bytes);
    assert.equal(req.service, "grpc.SandboxService");
    assert.equal(req.method, "Check");
    assert.equal(req.timeoutNano, 2 ** 40);
    assert.deepEqual(
      [...req.metadata],
      [
        ["containerd-namespace-ttrpc", ["k8s.io"]],
        ["a", ["1"]],
      ],
    );
  });

  it("reads a negative timeout (10-byte varint) as negative and skips unknown fields", () => {
    const base = toBinary(RequestSchema, create(RequestSchema, { service: "s", method: "m", timeoutNano: -5n }));
    // append unknown fields of each wire type: 9 varint, 10 fixed64, 11 bytes, 12 fixed32
    const unknown = Buffer.from([
      0x48, 0x96, 0x01, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5a, 2, 0xaa, 0xbb, 0x65, 1, 2, 3, 4,
    ]);
    const req = decodeRequest(Buffer.concat([base, unknown]));
    assert.equal(req.timeoutNano, -5);
    assert.equal(req.method, "m");
  });

  it("throws on truncated input", () => {
    const bytes = Buffer.concat(encodeRequest(route, [Buffer.alloc(50, 1)], 0, []));
    for (const cut of [1, route.length + 1, bytes.length - 1]) {
      assert.throws(() => decodeRequest(bytes.subarray(0, cut)), /runs past the end|truncated/);
    }
  });
});

describe("message encoding", () => {
  it("sends large bytes fields by reference and still decodes to the same message", () => {
    const payload = Buffer.alloc(100_000, 3);
    const msg = create(EchoMessageSchema, { payload, seq: 9, text: "t" });
    const parts = encodeMessage(EchoMessageSchema, msg);
    assert.equal(parts.length, 2, "the other fields, the payload's tag and length; the payload");
    assert.equal(parts[1], payload, "the payload itself, not a copy");
    const back = fromBinary(EchoMessageSchema, Buffer.concat(parts));
    assert.equal(back.seq, 9);
    assert.equal(back.text, "t");
    assert.ok(Buffer.from(back.payload).equals(payload));
    assert.equal(msg.payload, payload, "the caller's message is left alone");

    const any = create(AnySchema, { typeUrl: "containerd.types.transfer.Data", value: Buffer.alloc(20_000, 1) });
    const anyParts = encodeMessage(AnySchema, any);
    assert.equal(anyParts.at(-1), any.value);
    assert.deepEqual(fromBinary(AnySchema, Buffer.concat(anyParts)), any);
  });

  it("encodes small messages in one piece, exactly as toBinary does", () => {
    const msg = create(EchoMessageSchema, { payload: Buffer.alloc(100, 1), seq: 1 });
    const parts = encodeMessage(EchoMessageSchema, msg);
    assert.equal(parts.length, 1);
    assert.deepEqual(Buffer.from(parts[0]!), Buffer.from(toBinary(EchoMessageSchema, msg)));
    assert.equal(byteLength(parts), parts[0]!.length);
  });
});

describe("response envelope", () => {
  it("round-trips success and error statuses with the generated codec", () => {
    const ok = Buffer.concat(encodeResponse(undefined, [Buffer.from("out")]));
    const okGen = fromBinary(ResponseSchema, ok);
    assert.equal(okGen.status, undefined);
    assert.equal(Buffer.from(okGen.payload).toString(), "out");

    const detail = create(AnySchema, { typeUrl: "x.Y", value: new Uint8Array([9]) });
    const err = Buffer.concat(encodeResponse({ code: Code.NotFound, message: "no task t1", details: [detail] }, []));
    const errGen = fromBinary(ResponseSchema, err);
    assert.equal(errGen.status?.code, Code.NotFound);
    assert.equal(errGen.status?.message, "no task t1");
    assert.equal(errGen.status?.details[0]?.typeUrl, "x.Y");

    const decoded = decodeResponse(err);
    const e = statusError(decoded.status);
    assert.ok(e instanceof TtrpcError);
    assert.equal(e.code, Code.NotFound);
    assert.equal(e.message, "no task t1");
    assert.equal(e.details.length, 1);
    assert.equal(statusError(decodeResponse(ok).status), undefined);
  });

  it("treats a status with code 0 as success", () => {
    const bytes = toBinary(
      ResponseSchema,
      create(ResponseSchema, { status: { code: 0, message: "" }, payload: Buffer.from("p") }),
    );
    const res = decodeResponse(Buffer.from(bytes));
    assert.equal(statusError(res.status), undefined);
    assert.equal(res.payload.toString(), "p");
  });
});
