// Fuzz: >= 100k random and mutated frames from several connections at once
// while a well-behaved client keeps calling. The server must not crash, must
// keep answering the good client, and must leave no handles or timers behind.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { Task } from "../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Echo, EchoMessageSchema } from "../../../runtime/protos/gen/ttrpc/testing/echo_pb.ts";
import { encodeRequest, encodeRoute } from "../../../runtime/ttrpc/envelope.ts";
import { encodeHeader, FrameParser, MAX_DATA_LENGTH } from "../../../runtime/ttrpc/frame.ts";
import { TtrpcClient, TtrpcServer } from "../../../runtime/ttrpc/index.ts";
import { fuzzSeed, rng, subSeed, withSeed } from "../../../testkit/rng.ts";

const TOTAL_FRAMES = 120_000;
const FUZZ_CONNECTIONS = 4;
const FRAMES_PER_WRITE = 400;
const SEED = fuzzSeed("ttrpc fuzz");

class FrameFuzzer {
  private nextId = 1;
  private readonly openIds: number[] = [];
  private readonly int: (n: number) => number;
  private readonly pick: <T>(xs: readonly T[]) => T;
  private readonly routes = [
    ["ttrpc.testing.Echo", "Unary"],
    ["ttrpc.testing.Echo", "ServerStream"],
    ["ttrpc.testing.Echo", "ClientStream"],
    ["ttrpc.testing.Echo", "Bidi"],
    ["containerd.task.v3.Task", "State"],
    ["containerd.task.v3.Task", "Kill"],
    ["containerd.task.v3.Task", "Nope"],
    ["no.such.Service", "Unary"],
    ["", ""],
  ].map(([s, m]) => encodeRoute(s!, m!));

  constructor(private readonly random: () => number) {
    this.int = (n) => Math.floor(random() * n);
    this.pick = (xs) => xs[this.int(xs.length)]!;
  }

  private bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  private streamId(): number {
    const r = this.random();
    if (r < 0.7) {
      const id = this.nextId;
      this.nextId += 2;
      this.openIds.push(id);
      if (this.openIds.length > 64) this.openIds.shift();
      return id;
    }
    if (r < 0.8 && this.openIds.length > 0) return this.pick(this.openIds); // reuse
    if (r < 0.9) return this.int(2 ** 32); // anything, even ids included
    return this.int(20) * 2; // small even id
  }

  private message(): Uint8Array {
    return toBinary(
      EchoMessageSchema,
      create(EchoMessageSchema, {
        payload: this.bytes(this.int(64)),
        seq: this.int(1000),
        text: this.pick(["", "x", "ÿ€", "long".repeat(20)]),
        count: this.int(4),
      }),
    );
  }

  private request(): Buffer {
    const timeout = this.pick([0, 0, 0, 1, 5e6, 3e9, -1, 2 ** 62]);
    const md: Array<[string, string]> = this.random() < 0.3 ? [["Containerd-Namespace-TTRPC", "k8s.io"]] : [];
    const payload = this.random() < 0.8 ? this.message() : this.bytes(this.int(40));
    return Buffer.concat(encodeRequest(this.pick(this.routes), [payload], timeout, md));
  }

  private frame(id: number, type: number, flags: number, data: Buffer): Buffer {
    return Buffer.concat([encodeHeader(data.length, id, type, flags), data]);
  }

  /** One frame's worth of bytes: mostly well-formed, then increasingly hostile. */
  next(): Buffer {
    const r = this.random();
    if (r < 0.35) return this.frame(this.streamId(), 1, this.pick([0, 0, 1, 2, 3, this.int(256)]), this.request());
    if (r < 0.6) {
      const id = this.openIds.length > 0 && this.random() < 0.8 ? this.pick(this.openIds) : this.streamId();
      const flags = this.pick([0, 0, 1, 4, 5, this.int(256)]);
      return this.frame(id, 3, flags, flags & 4 ? Buffer.alloc(0) : Buffer.from(this.message()));
    }
    if (r < 0.68)
      return this.frame(this.streamId(), this.pick([0, 2, 4, 9, 255]), this.int(256), this.bytes(this.int(32)));
    if (r < 0.8) {
      // a valid frame with flipped bits in its data (header intact, so framing stays in sync)
      const data = this.request();
      for (let i = this.int(4) + 1; i > 0; i--) {
        const at = this.int(data.length);
        data[at] = data[at]! ^ (1 << this.int(8));
      }
      return this.frame(this.streamId(), 1, 0, data);
    }
    if (r < 0.9993) return this.frame(this.streamId(), this.pick([1, 3]), this.int(8), this.bytes(this.int(100)));
    if (r < 0.9998) {
      // a header whose length disagrees with the data: framing desyncs until the connection dies
      const data = this.request();
      const f = this.frame(this.streamId(), 1, 0, data);
      f.writeUInt32BE(Math.max(0, data.length + this.int(21) - 10), 0);
      return f;
    }
    // oversize: announced and sent in full, to be skipped
    return this.frame(this.streamId(), this.pick([1, 3]), 0, Buffer.alloc(MAX_DATA_LENGTH + 1 + this.int(1000)));
  }
}

function resources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

it(`survives ${TOTAL_FRAMES} fuzzed frames on ${FUZZ_CONNECTIONS} connections`, () => withSeed(SEED, fuzzFrames));

async function fuzzFrames(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ttrpc-fuzz-"));
  const socketPath = path.join(dir, "fuzz.sock");
  await sleep(50); // let timers and handles of earlier work settle
  const before = resources();

  const server = new TtrpcServer()
    .register(Echo, {
      unary: (req) => req,
      serverStream: async (req, out) => {
        for (let i = 0; i < Math.min(req.count, 3); i++) await out.send({ seq: i });
      },
      clientStream: async (reqs) => {
        let n = 0;
        for await (const _ of reqs) n++;
        return { count: n };
      },
      bidi: async (reqs, out) => {
        for await (const r of reqs) await out.send(r);
      },
    })
    .register(Task, {
      state: async (req, ctx) => {
        await sleep(1, undefined, { signal: ctx.signal }).catch(() => {});
        return { id: req.id };
      },
    });
  const listener = net.createServer();
  server.serve(listener);
  await new Promise<void>((resolve) => listener.listen(socketPath, resolve));

  // the well-behaved client
  const good = new TtrpcClient(net.connect(socketPath));
  const echo = good.service(Echo);
  let goodCalls = 0;
  let fuzzing = true;
  const goodLoop = (async () => {
    while (fuzzing) {
      const res = await echo.unary({ seq: goodCalls, text: "good" });
      assert.equal(res.seq, goodCalls);
      const streamed: number[] = [];
      for await (const m of echo.serverStream({ count: 3 })) streamed.push(m.seq);
      assert.deepEqual(streamed, [0, 1, 2]);
      goodCalls++;
      await sleep(1);
    }
  })();

  let sent = 0;
  let responses = 0;
  let connections = 0;
  const fuzzOne = async (worker: number) => {
    for (let n = 0; sent < TOTAL_FRAMES; n++) {
      connections++;
      const sock = net.connect(socketPath);
      const answers = new FrameParser({ onFrame: () => responses++, onOversize: () => assert.fail("oversize answer") });
      sock.on("data", (d) => answers.push(d));
      sock.on("error", () => {});
      const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
      await new Promise<void>((resolve) => sock.once("connect", resolve));
      // Each connection draws its own frames: a replay sends the same ones whatever the interleaving.
      const fuzzer = new FrameFuzzer(rng(subSeed(subSeed(SEED, worker), n)));
      let open = true;
      void closed.then(() => (open = false));
      while (open && sent < TOTAL_FRAMES) {
        const batch: Buffer[] = [];
        for (let i = 0; i < FRAMES_PER_WRITE; i++) batch.push(fuzzer.next());
        sent += batch.length;
        if (!sock.write(Buffer.concat(batch))) {
          await Promise.race([new Promise((resolve) => sock.once("drain", resolve)), closed]);
        }
        await sleep(0);
      }
      // give the server a moment to answer the tail before hanging up
      await Promise.race([sleep(20), closed]);
      sock.destroy();
      await closed;
    }
  };
  await Promise.all(Array.from({ length: FUZZ_CONNECTIONS }, (_, worker) => fuzzOne(worker)));
  fuzzing = false;
  await goodLoop;

  assert.ok(sent >= 100_000, `sent ${sent} frames`);
  assert.ok(goodCalls > 0, "the well-behaved client made progress");
  // the good client's connection survived everything
  assert.equal((await echo.unary({ seq: 77 })).seq, 77);
  good.close();
  await good.closed;
  await server.close();
  assert.equal(server.connectionCount, 0);
  await sleep(50);
  rmSync(dir, { recursive: true, force: true });

  const afterwards = resources();
  for (const [kind, n] of afterwards) {
    assert.ok(n <= (before.get(kind) ?? 0), `leaked ${kind}: ${before.get(kind) ?? 0} before, ${n} after`);
  }
  assert.ok(responses > sent / 8, `only ${responses} answers to ${sent} frames`);
  console.log(
    `# fuzz: ${sent} frames over ${connections} connections, ${responses} frames answered; ${goodCalls} good round trips meanwhile`,
  );
}
