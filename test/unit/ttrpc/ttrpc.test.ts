// ttrpc client and server over unix sockets: calls, errors, deadlines,
// cancellation, limits, stream ids, streaming and shutdown. Protocol-level
// cases use a raw socket that writes frames by hand.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { Task as TaskV2 } from "../../../runtime/protos/gen/containerd/runtime/task/v2/shim_pb.ts";
import { Task as TaskV3 } from "../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Echo, EchoMessageSchema } from "../../../runtime/protos/gen/ttrpc/testing/echo_pb.ts";
import { decodeResponse, encodeRequest, encodeRoute } from "../../../runtime/ttrpc/envelope.ts";
import { encodeHeader, FrameParser } from "../../../runtime/ttrpc/frame.ts";
import {
  type CallContext,
  Code,
  Flag,
  heldUntil,
  MAX_DATA_LENGTH,
  MessageType,
  type ServiceHandlers,
  TtrpcClient,
  TtrpcError,
  TtrpcServer,
} from "../../../runtime/ttrpc/index.ts";

let dir: string;
let seq = 0;
before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "ttrpc-test-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

interface Harness {
  server: TtrpcServer;
  socketPath: string;
  client(): Promise<TtrpcClient>;
  raw(): Promise<RawConn>;
  stop(): Promise<void>;
}

async function connect(socketPath: string): Promise<net.Socket> {
  const sock = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  return sock;
}

async function harness(setup: (server: TtrpcServer) => void): Promise<Harness> {
  const server = new TtrpcServer();
  setup(server);
  const listener = net.createServer();
  server.serve(listener);
  const socketPath = path.join(dir, `s${++seq}.sock`);
  await new Promise<void>((resolve) => listener.listen(socketPath, resolve));
  const clients: TtrpcClient[] = [];
  const raws: RawConn[] = [];
  return {
    server,
    socketPath,
    client: async () => {
      const c = new TtrpcClient(await connect(socketPath));
      clients.push(c);
      return c;
    },
    raw: async () => {
      const r = new RawConn(await connect(socketPath));
      raws.push(r);
      return r;
    },
    stop: async () => {
      for (const c of clients) c.close();
      for (const r of raws) r.sock.destroy();
      await server.close();
    },
  };
}

interface RawFrame {
  id: number;
  type: number;
  flags: number;
  data: Buffer;
}

/** A hand-driven ttrpc peer: writes arbitrary frames, reads frames back. */
class RawConn {
  private frames: RawFrame[] = [];
  private waiters: Array<(f: RawFrame) => void> = [];
  readonly closed: Promise<void>;

  constructor(readonly sock: net.Socket) {
    const parser = new FrameParser({
      onFrame: (id, type, flags, data) => {
        const f = { id, type, flags, data: Buffer.from(data) };
        const w = this.waiters.shift();
        if (w) w(f);
        else this.frames.push(f);
      },
      onOversize: () => assert.fail("server sent an oversize frame"),
    });
    sock.on("data", (d) => parser.push(d));
    sock.on("error", () => {});
    this.closed = new Promise((resolve) => sock.once("close", () => resolve()));
  }

  send(id: number, type: number, flags: number, data: Uint8Array | Uint8Array[]): void {
    const parts = Array.isArray(data) ? data : [data];
    const length = parts.reduce((n, p) => n + p.length, 0);
    this.sock.write(Buffer.concat([encodeHeader(length, id, type, flags), ...parts]));
  }

  request(id: number, service: string, method: string, payload: Uint8Array, flags = 0, timeoutNano = 0): void {
    this.send(id, MessageType.Request, flags, encodeRequest(encodeRoute(service, method), [payload], timeoutNano, []));
  }

  next(timeoutMs = 2000): Promise<RawFrame> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no frame from server")), timeoutMs);
      this.waiters.push((frame) => {
        clearTimeout(timer);
        resolve(frame);
      });
    });
  }

  /** Next frame, which must be a Response; returns its status code (0 = OK) and payload. */
  async response(id: number): Promise<{ code: number; message: string; payload: Buffer }> {
    const f = await this.next();
    assert.equal(f.type, MessageType.Response, `expected a Response frame, got type ${f.type}`);
    assert.equal(f.id, id);
    const res = decodeResponse(f.data);
    return { code: res.status?.code ?? 0, message: res.status?.message ?? "", payload: res.payload };
  }
}

const echoBytes = (init: Parameters<typeof create<typeof EchoMessageSchema>>[1]) =>
  toBinary(EchoMessageSchema, create(EchoMessageSchema, init));

async function rejectsWith(p: Promise<unknown>, code: Code, message?: RegExp): Promise<TtrpcError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof TtrpcError, `expected TtrpcError, got ${err}`);
    assert.equal(err.codeName, Code[code], `code (message: ${err.message})`);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected a ${Code[code]} rejection`);
}

describe("ttrpc unary calls", () => {
  let h: Harness;
  const seen: { signal?: AbortSignal; ctx?: CallContext } = {};
  before(async () => {
    h = await harness((server) =>
      server.register(Echo, {
        unary: async (req, ctx) => {
          seen.ctx = ctx;
          if (req.text === "sleep") {
            seen.signal = ctx.signal;
            await sleep(req.count, undefined, { signal: ctx.signal }).catch(() => {});
          }
          if (req.text === "fail") throw new TtrpcError(req.count as Code, `failed with ${req.count}`);
          if (req.text === "enoent") throw Object.assign(new Error("no such file"), { code: "ENOENT" });
          if (req.text === "plain") throw new Error("plain failure");
          if (req.text === "huge") return { payload: Buffer.alloc(MAX_DATA_LENGTH + 1) };
          if (req.text === "empty") return {};
          return { payload: req.payload, seq: req.seq + 1, text: req.text };
        },
      }),
    );
  });
  after(() => h.stop());

  it("round-trips a call over a unix socket", async () => {
    const echo = (await h.client()).service(Echo);
    const res = await echo.unary({ payload: Buffer.from("ping"), seq: 41, text: "t" });
    assert.equal(Buffer.from(res.payload).toString(), "ping");
    assert.equal(res.seq, 42);
    assert.equal(res.text, "t");
  });

  it("multiplexes concurrent calls and matches out-of-order responses", async () => {
    const echo = (await h.client()).service(Echo);
    const delays = [60, 5, 40, 0, 20, 50, 10, 30];
    const finished: number[] = [];
    const results = await Promise.all(
      delays.map(async (d, i) => {
        const r = await echo.unary({ text: "sleep", count: d, seq: i * 10 });
        finished.push(i);
        return r.seq;
      }),
    );
    assert.deepEqual(
      results,
      delays.map((_, i) => i * 10 + 1),
    );
    assert.notDeepEqual(
      finished,
      [...finished].sort((a, b) => a - b),
      "responses should arrive out of order",
    );
  });

  it("passes metadata with lowercased keys", async () => {
    const echo = (await h.client()).service(Echo);
    await echo.unary({}, { metadata: { "Containerd-Namespace-TTRPC": "k8s.io", "X-Multi": ["a", "b"] } });
    assert.deepEqual(seen.ctx?.metadata.get("containerd-namespace-ttrpc"), ["k8s.io"]);
    assert.deepEqual(seen.ctx?.metadata.get("x-multi"), ["a", "b"]);
    assert.equal(seen.ctx?.service, "ttrpc.testing.Echo");
    assert.equal(seen.ctx?.method, "Unary");
  });

  it("carries every status code and message back to the caller", async () => {
    const echo = (await h.client()).service(Echo);
    for (let code = 1; code <= 16; code++) {
      await rejectsWith(echo.unary({ text: "fail", count: code }), code, new RegExp(`failed with ${code}`));
    }
    await rejectsWith(echo.unary({ text: "enoent" }), Code.NotFound, /no such file/);
    await rejectsWith(echo.unary({ text: "plain" }), Code.Unknown, /plain failure/);
  });

  it("times out with DeadlineExceeded and aborts the handler's signal", async () => {
    const raw = await h.raw();
    // server-side deadline alone: the raw peer has no timer of its own
    raw.request(1, "ttrpc.testing.Echo", "Unary", echoBytes({ text: "sleep", count: 5000 }), 0, 50e6);
    const res = await raw.response(1);
    assert.equal(res.code, Code.DeadlineExceeded);
    assert.equal(seen.signal?.aborted, true);
    assert.equal((seen.signal.reason as TtrpcError).code, Code.DeadlineExceeded);

    const echo = (await h.client()).service(Echo);
    // Without the deadline the 5 s sleep would end in an OK answer.
    await rejectsWith(echo.unary({ text: "sleep", count: 5000 }, { timeoutMs: 80 }), Code.DeadlineExceeded);
    // the connection is still good
    assert.equal((await echo.unary({ seq: 1 })).seq, 2);
  });

  it("cancels a call through its AbortSignal and drops the late answer", async () => {
    const client = await h.client();
    const echo = client.service(Echo);
    const ac = new AbortController();
    const pending = echo.unary({ text: "sleep", count: 100 }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await rejectsWith(pending, Code.Canceled);
    await sleep(150); // the server's answer to the canceled call arrives and is ignored
    assert.equal((await echo.unary({ seq: 7 })).seq, 8);
    await rejectsWith(echo.unary({}, { signal: AbortSignal.abort() }), Code.Canceled);
  });

  it("answers Unimplemented for unknown services and methods without a handler", async () => {
    const client = await h.client();
    await rejectsWith(client.service(TaskV3).state({ id: "x" }), Code.Unimplemented, /containerd.task.v3.Task/);
    await rejectsWith(
      (async () => {
        for await (const _ of client.service(Echo).serverStream({})) {
          // no messages expected
        }
      })(),
      Code.Unimplemented,
      /ServerStream/,
    );
  });

  it("handles empty messages as zero-length payloads", async () => {
    const raw = await h.raw();
    raw.request(1, "ttrpc.testing.Echo", "Unary", echoBytes({ text: "empty" }));
    const f = await raw.next();
    assert.equal(f.type, MessageType.Response);
    assert.equal(f.data.length, 0, "an OK response with an empty message is an empty frame");
    raw.request(3, "ttrpc.testing.Echo", "Unary", new Uint8Array(0));
    assert.deepEqual((await raw.response(3)).payload, Buffer.from(echoBytes({ seq: 1 })));
    const echo = (await h.client()).service(Echo);
    assert.equal((await echo.unary({})).seq, 1);
  });

  it("accepts a request frame of exactly the maximum length", async () => {
    const echo = (await h.client()).service(Echo);
    // Request frame = route + payload field; EchoMessage = field 1 header + bytes
    const route = encodeRoute("ttrpc.testing.Echo", "Unary").length;
    let n = MAX_DATA_LENGTH - route - 20;
    const frameLen = (k: number) =>
      encodeRequest(Buffer.alloc(route), [echoBytes({ payload: Buffer.alloc(k) })], 0, []);
    while (frameLen(n).reduce((s, p) => s + p.length, 0) < MAX_DATA_LENGTH) n++;
    assert.equal(
      frameLen(n).reduce((s, p) => s + p.length, 0),
      MAX_DATA_LENGTH,
    );
    const res = await echo.unary({ payload: Buffer.alloc(n, 5) });
    assert.equal(res.payload.length, n);
    await rejectsWith(echo.unary({ payload: Buffer.alloc(n + 1) }), Code.ResourceExhausted, /maximum message size/);
    assert.equal((await echo.unary({ seq: 1 })).seq, 2);
  });

  it("answers ResourceExhausted to an oversize frame and keeps the connection", async () => {
    const raw = await h.raw();
    raw.send(1, MessageType.Request, 0, Buffer.alloc(MAX_DATA_LENGTH + 1));
    const res = await raw.response(1);
    assert.equal(res.code, Code.ResourceExhausted);
    raw.request(3, "ttrpc.testing.Echo", "Unary", echoBytes({ seq: 1 }));
    assert.equal((await raw.response(3)).code, 0);
  });

  it("refuses to send an oversize response", async () => {
    const echo = (await h.client()).service(Echo);
    await rejectsWith(echo.unary({ text: "huge" }), Code.ResourceExhausted);
    assert.equal((await echo.unary({ seq: 3 })).seq, 4);
  });

  it("rejects even, reused and decreasing stream ids", async () => {
    const raw = await h.raw();
    const ok = echoBytes({ seq: 1 });
    raw.request(2, "ttrpc.testing.Echo", "Unary", ok);
    assert.equal((await raw.response(2)).code, Code.InvalidArgument);
    raw.request(5, "ttrpc.testing.Echo", "Unary", ok);
    assert.equal((await raw.response(5)).code, 0);
    raw.request(5, "ttrpc.testing.Echo", "Unary", ok);
    const reused = await raw.response(5);
    assert.equal(reused.code, Code.InvalidArgument);
    assert.match(reused.message, /reused/);
    raw.request(3, "ttrpc.testing.Echo", "Unary", ok);
    assert.equal((await raw.response(3)).code, Code.InvalidArgument);
    raw.request(7, "ttrpc.testing.Echo", "Unary", ok);
    assert.equal((await raw.response(7)).code, 0);
  });

  it("answers InvalidArgument to a malformed request, data on a unary stream and data for an unknown stream", async () => {
    const raw = await h.raw();
    raw.send(1, MessageType.Request, 0, Buffer.from([0x0a, 0x50, 0x41])); // service string runs past the end
    assert.equal((await raw.response(1)).code, Code.InvalidArgument);
    raw.request(3, "ttrpc.testing.Echo", "Unary", Buffer.from([0x0a, 0x09])); // payload: truncated EchoMessage
    const bad = await raw.response(3);
    assert.equal(bad.code, Code.InvalidArgument);
    assert.match(bad.message, /ttrpc.testing.EchoMessage/);
    raw.request(5, "ttrpc.testing.Echo", "Unary", echoBytes({ text: "sleep", count: 200 }));
    raw.send(5, MessageType.Data, 0, echoBytes({}));
    assert.equal((await raw.response(5)).code, Code.InvalidArgument);
    raw.send(99, MessageType.Data, 0, echoBytes({}));
    assert.equal((await raw.response(99)).code, Code.InvalidArgument);
  });

  it("survives a truncated frame from a peer that then goes away", async () => {
    const raw = await h.raw();
    raw.sock.write(Buffer.concat([encodeHeader(100, 1, MessageType.Request, 0), Buffer.alloc(40)]));
    raw.sock.end();
    await raw.closed;
    const echo = (await h.client()).service(Echo);
    assert.equal((await echo.unary({ seq: 9 })).seq, 10);
  });

  it("closes only the connection that sent a malformed header", async () => {
    const raw = await h.raw();
    const echo = (await h.client()).service(Echo);
    raw.sock.write(Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 1, 1, 0]));
    await raw.closed;
    assert.equal((await echo.unary({ seq: 1 })).seq, 2);
  });

  it("serves the same handlers under the v2 and v3 task service names", async () => {
    const handlers: ServiceHandlers<typeof TaskV3> = {
      create: (req) => ({ pid: req.id.length }),
      connect: () => ({ taskPid: 42, version: "3" }),
    };
    const t = await harness((server) =>
      server.register(TaskV3, handlers).registerAs(TaskV2.typeName, TaskV3, handlers),
    );
    try {
      const client = await t.client();
      assert.equal((await client.service(TaskV3).create({ id: "abcd" })).pid, 4);
      assert.equal((await client.service(TaskV2).create({ id: "abc" })).pid, 3);
      assert.equal((await client.service(TaskV3, TaskV2.typeName).connect({ id: "x" })).taskPid, 42);
      await rejectsWith(client.service(TaskV2).pids({ id: "x" }), Code.Unimplemented);
      assert.throws(() => new TtrpcServer().register(TaskV3, { nosuch: () => ({}) } as never), /nosuch/);
    } finally {
      await t.stop();
    }
  });
});

describe("handlers held until a promise settles", () => {
  it("queues calls that arrive early and answers them, in order, once it has", async () => {
    let settle!: () => void;
    const ready = new Promise<void>((r) => {
      settle = r;
    });
    const ran: number[] = [];
    const h = await harness((server) =>
      server.register(
        Echo,
        heldUntil<typeof Echo>(
          {
            unary: async (req) => {
              ran.push(req.seq);
              return { seq: req.seq };
            },
          },
          ready,
        ),
      ),
    );
    try {
      const echo = (await h.client()).service(Echo);
      const answered: number[] = [];
      const calls = [1, 2].map((seq) => echo.unary({ seq }).then((r) => answered.push(r.seq)));
      await sleep(100);
      assert.deepEqual(ran, [], "no handler ran before the promise settled");
      settle();
      await Promise.all(calls);
      assert.deepEqual(ran, [1, 2]);
      assert.deepEqual(answered, [1, 2]);
      assert.equal((await echo.unary({ seq: 3 })).seq, 3, "later calls pass straight through");
    } finally {
      await h.stop();
    }
  });
});

describe("ttrpc streaming", () => {
  let h: Harness;
  before(async () => {
    h = await harness((server) =>
      server.register(Echo, {
        serverStream: async (req, out) => {
          for (let i = 0; i < req.count; i++) await out.send({ seq: i, payload: req.payload });
          if (req.text === "fail") throw new TtrpcError(Code.Aborted, "stopped after sending");
        },
        clientStream: async (reqs) => {
          let sum = 0;
          let n = 0;
          for await (const r of reqs) {
            sum += r.seq;
            n++;
          }
          return { seq: sum, count: n };
        },
        bidi: async (reqs, out) => {
          for await (const r of reqs) {
            if (r.text === "fail") throw new TtrpcError(Code.FailedPrecondition, "bidi refused");
            await out.send({ seq: r.seq * 2, text: r.text });
          }
          await out.send({ text: "bye" });
        },
      }),
    );
  });
  after(() => h.stop());

  it("server-streaming: receives every message, then the end of stream", async () => {
    const echo = (await h.client()).service(Echo);
    const got: number[] = [];
    for await (const m of echo.serverStream({ count: 500, payload: Buffer.alloc(100) })) got.push(m.seq);
    assert.deepEqual(
      got,
      Array.from({ length: 500 }, (_, i) => i),
    );
  });

  it("server-streaming: an error after some messages reaches the iterator", async () => {
    const echo = (await h.client()).service(Echo);
    const got: number[] = [];
    await rejectsWith(
      (async () => {
        for await (const m of echo.serverStream({ count: 3, text: "fail" })) got.push(m.seq);
      })(),
      Code.Aborted,
      /stopped after sending/,
    );
    assert.deepEqual(got, [0, 1, 2]);
  });

  it("server-streaming on the wire: Request[remote-closed], Data frames, Data[remote-closed|no-data]", async () => {
    const raw = await h.raw();
    raw.request(1, "ttrpc.testing.Echo", "ServerStream", echoBytes({ count: 2 }), Flag.RemoteClosed);
    const frames = [await raw.next(), await raw.next(), await raw.next()];
    assert.deepEqual(
      frames.map((f) => [f.id, f.type, f.flags]),
      [
        [1, MessageType.Data, 0],
        [1, MessageType.Data, 0],
        [1, MessageType.Data, Flag.RemoteClosed | Flag.NoData],
      ],
    );
    assert.equal(frames[0]!.data.length, 0, "the first message (seq 0) is empty on the wire");
  });

  it("client-streaming: sends messages (empty ones too) and gets one response", async () => {
    const echo = (await h.client()).service(Echo);
    const call = echo.clientStream();
    for (let i = 0; i < 100; i++) await call.send({ seq: i });
    await call.send({});
    const res = await call.closeAndReceive();
    assert.equal(res.seq, 4950);
    assert.equal(res.count, 101);
  });

  it("client-streaming on the wire: Request[remote-open], Data, Data[remote-closed|no-data], Response", async () => {
    const raw = await h.raw();
    raw.request(1, "ttrpc.testing.Echo", "ClientStream", new Uint8Array(0), Flag.RemoteOpen);
    raw.send(1, MessageType.Data, 0, echoBytes({ seq: 5 }));
    raw.send(1, MessageType.Data, 0, new Uint8Array(0));
    raw.send(1, MessageType.Data, Flag.RemoteClosed | Flag.NoData, new Uint8Array(0));
    const res = await raw.response(1);
    assert.equal(res.code, 0);
    assert.deepEqual(res.payload, Buffer.from(echoBytes({ seq: 5, count: 2 })));
    // data after the client closed its side is a protocol error
    raw.request(3, "ttrpc.testing.Echo", "ClientStream", new Uint8Array(0), Flag.RemoteOpen | Flag.RemoteClosed);
    assert.equal((await raw.response(3)).code, 0);
  });

  it("bidirectional: interleaves sends and receives", async () => {
    const echo = (await h.client()).service(Echo);
    const call = echo.bidi();
    const it = call[Symbol.asyncIterator]();
    for (let i = 1; i <= 5; i++) {
      await call.send({ seq: i, text: `m${i}` });
      const r = await it.next();
      assert.equal(r.value?.seq, i * 2);
      assert.equal(r.value?.text, `m${i}`);
    }
    call.closeSend();
    assert.equal((await it.next()).value?.text, "bye");
    assert.equal((await it.next()).done, true);
  });

  it("bidirectional: a handler error fails both directions", async () => {
    const echo = (await h.client()).service(Echo);
    const call = echo.bidi();
    await call.send({ text: "fail" });
    await rejectsWith(
      (async () => {
        for await (const _ of call) {
          // the handler fails before sending anything
        }
      })(),
      Code.FailedPrecondition,
      /bidi refused/,
    );
    await rejectsWith(call.send({ seq: 1 }), Code.FailedPrecondition);
  });

  it("lets senders reuse a buffer as soon as send() resolves", async () => {
    const size = 64 << 10;
    const t = await harness((server) =>
      server.register(Echo, {
        clientStream: async (reqs) => {
          let intact = 0;
          let n = 0;
          for await (const r of reqs) {
            if (Buffer.from(r.payload).equals(Buffer.alloc(size, n % 251))) intact++;
            n++;
          }
          return { count: intact, seq: n };
        },
        serverStream: async (req, out) => {
          const buf = Buffer.alloc(size);
          for (let i = 0; i < req.count; i++) {
            buf.fill(i % 251);
            await out.send({ payload: buf });
          }
        },
      }),
    );
    try {
      const echo = (await t.client()).service(Echo);
      const up = echo.clientStream();
      const buf = Buffer.alloc(size);
      for (let i = 0; i < 100; i++) {
        buf.fill(i % 251);
        await up.send({ payload: buf });
      }
      const res = await up.closeAndReceive();
      assert.deepEqual([res.count, res.seq], [100, 100]);
      let i = 0;
      for await (const m of echo.serverStream({ count: 100 })) {
        assert.ok(Buffer.from(m.payload).equals(Buffer.alloc(size, i % 251)), `message ${i} intact`);
        i++;
      }
      assert.equal(i, 100);
    } finally {
      await t.stop();
    }
  });

  it("a consumer that stops reading stalls the connection until its stream fails (after 1 s)", {
    timeout: 60_000,
  }, async () => {
    const client = await h.client();
    const echo = client.service(Echo);
    const stream = echo.serverStream({ count: 5000, payload: Buffer.alloc(1000) });
    const it = stream[Symbol.asyncIterator]();
    assert.equal((await it.next()).value?.seq, 0);
    // other calls wait while the stream's queue is full, and proceed once it is failed
    const t0 = Date.now();
    const other = client.service(Echo).clientStream();
    await other.send({ seq: 1 });
    assert.equal((await other.closeAndReceive()).seq, 1);
    // It finished at all: nothing reads the stalled stream, so only failing it let the connection read on.
    const waited = Date.now() - t0;
    assert.ok(waited >= 500, `waited ${waited} ms: the full queue did not stall the connection`);
    const err = await rejectsWith(
      (async () => {
        for (;;) if ((await it.next()).done) break;
      })(),
      Code.ResourceExhausted,
    );
    assert.match(err.message, /receive buffer full/);
  });
});

describe("ttrpc connection lifecycle", () => {
  it("rejects pending calls with Unavailable when the connection closes", async () => {
    let release!: () => void;
    const h = await harness((s) =>
      s.register(Echo, {
        unary: () =>
          new Promise((resolve) => {
            release = () => resolve({});
          }),
      }),
    );
    const client = await h.client();
    const pending = client.service(Echo).unary({});
    await sleep(20);
    client.close();
    await rejectsWith(pending, Code.Unavailable);
    assert.equal(await client.closed, undefined);
    await rejectsWith(client.service(Echo).unary({}), Code.Unavailable);
    release();
    await h.stop();
  });

  it("shutdown refuses new calls, drains in-flight ones, then closes", async () => {
    const started: string[] = [];
    const h = await harness((s) =>
      s.register(Echo, {
        unary: async (req) => {
          started.push(req.text);
          await sleep(req.count);
          return { text: `done ${req.text}` };
        },
      }),
    );
    const client = await h.client();
    const echo = client.service(Echo);
    const idle = await h.client();
    const slow = echo.unary({ text: "slow", count: 150 });
    await sleep(30);
    const shutdown = h.server.shutdown();
    let shutDown = false;
    void shutdown.then(() => (shutDown = true));
    await rejectsWith(echo.unary({ text: "late" }), Code.Unavailable, /shutting down/);
    assert.equal(await idle.closed, undefined, "idle connections close at once");
    assert.equal(shutDown, false);
    assert.equal((await slow).text, "done slow");
    await shutdown;
    assert.equal(await client.closed, undefined);
    assert.deepEqual(started, ["slow"]);
    await assert.rejects(connect(h.socketPath));
    await h.stop();
  });

  it("close aborts in-flight handlers and callers see Unavailable", async () => {
    let signal: AbortSignal | undefined;
    const h = await harness((s) =>
      s.register(Echo, {
        unary: async (_req, ctx) => {
          signal = ctx.signal;
          await sleep(10_000, undefined, { signal: ctx.signal });
          return {};
        },
      }),
    );
    const client = await h.client();
    const pending = client.service(Echo).unary({});
    await sleep(30);
    await h.server.close();
    await rejectsWith(pending, Code.Unavailable);
    assert.equal(signal?.aborted, true);
    assert.equal((signal.reason as TtrpcError).code, Code.Canceled);
    await h.stop();
  });
});
