import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough, Writable } from "node:stream";
import { after, before, test } from "node:test";
import type { Any } from "@bufbuild/protobuf/wkt";
import { Streaming } from "../../../runtime/protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import {
  type AnyChannel,
  ackMessage,
  initMessage,
  readInit,
  receiveStream,
  sendStream,
  WINDOW,
} from "../../../runtime/streaming/stdio-stream.ts";
import { TtrpcClient, TtrpcServer } from "../../../runtime/ttrpc/index.ts";

// The guest side: "out-*" streams send a registered source, "in-*" streams receive into a registered sink.
const sources = new Map<string, PassThrough>();
const sinks = new Map<string, Writable>();
let dir: string;
let server: TtrpcServer;
let listener: net.Server;
let client: TtrpcClient;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "stdio-stream-"));
  server = new TtrpcServer().register(Streaming, {
    stream: async (requests, out) => {
      const ch: AnyChannel = { send: (m) => out.send(m), messages: requests[Symbol.asyncIterator](), end: () => {} };
      const id = await readInit(ch);
      await out.send(ackMessage());
      if (id.startsWith("out-")) await sendStream(ch, sources.get(id)!);
      else await receiveStream(ch, sinks.get(id)!);
    },
  });
  listener = net.createServer();
  server.serve(listener);
  const sock = path.join(dir, "s.sock");
  await new Promise<void>((r) => listener.listen(sock, r));
  client = new TtrpcClient(net.connect(sock));
});

after(async () => {
  client.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

async function open(id: string): Promise<AnyChannel> {
  const call = client.service(Streaming).stream();
  const it = call[Symbol.asyncIterator]();
  await call.send(initMessage(id));
  const ack = await it.next();
  assert.equal(ack.done, false);
  return { send: (m: Any) => call.send(m), messages: it, end: () => call.closeSend() };
}

test("guest-to-host: 1 MiB arrives intact through a slow sink", async () => {
  const payload = randomBytes(1 << 20);
  const source = new PassThrough();
  sources.set("out-1", source);
  const received: Buffer[] = [];
  const sink = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      received.push(chunk);
      setTimeout(cb, 1);
    },
  });
  const done = receiveStream(await open("out-1"), sink);
  source.end(payload);
  await done;
  assert.ok(Buffer.concat(received).equals(payload));
});

test("a stalled sink holds the sender to one window of credit", async () => {
  const source = new PassThrough();
  sources.set("out-2", source);
  let accepted = 0;
  const pending: Array<() => void> = [];
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      accepted += chunk.length;
      pending.push(cb);
    },
  });
  const done = receiveStream(await open("out-2"), sink);
  source.end(randomBytes(4 * WINDOW));
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(accepted <= WINDOW, `${accepted} bytes arrived with only ${WINDOW} granted`);
  assert.ok(accepted > 0);
  const release = setInterval(() => {
    for (const cb of pending.splice(0)) cb();
  }, 1);
  await done;
  clearInterval(release);
  assert.equal(accepted, 4 * WINDOW);
});

test("host-to-guest: stdin bytes reach the sink and closing the host side ends it", async () => {
  const chunks: Buffer[] = [];
  let ended = false;
  sinks.set(
    "in-1",
    new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
      final(cb) {
        ended = true;
        cb();
      },
    }),
  );
  const ch = await open("in-1");
  const src = new PassThrough();
  const sending = sendStream(ch, src);
  src.write("hello ");
  src.end("guest\n");
  await sending;
  for (let i = 0; i < 100 && !ended; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(Buffer.concat(chunks).toString(), "hello guest\n");
  assert.ok(ended, "the guest sink was ended");
});

test("a stream opened without a StreamInit is refused", async () => {
  const call = client.service(Streaming).stream();
  await call.send({
    $typeName: "google.protobuf.Any",
    typeUrl: "type.googleapis.com/foo.Bar",
    value: new Uint8Array(),
  });
  await assert.rejects(async () => {
    for await (const _ of call) {
      // drain
    }
  }, /instead of a StreamInit/);
});
