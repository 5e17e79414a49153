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
import { dataMessage, windowMessage } from "../../../runtime/streaming/messages.ts";
import {
  type AnyChannel,
  ackMessage,
  initMessage,
  MAX_CREDIT,
  readInit,
  receiveStream,
  sendStream,
  WINDOW,
} from "../../../runtime/streaming/stdio-stream.ts";
import { TtrpcClient, TtrpcServer } from "../../../runtime/ttrpc/index.ts";
import { fakeChannel, stuckSink, tick } from "./fake-channel.ts";

// The guest side: "out-*" streams send a registered source, "in-*" streams receive into a registered sink,
// "flood-*" streams send FLOOD bytes of Data without waiting for credit, then wait for the host to end its side.
const sources = new Map<string, PassThrough>();
const sinks = new Map<string, Writable>();
const FLOOD = 64 * 16 * 1024;
const floods = new Map<string, { sent: number; hostEnded: Promise<void> }>();
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
      if (id.startsWith("out-")) await sendStream(ch, sources.get(id)!, id);
      else if (id.startsWith("in-")) await receiveStream(ch, sinks.get(id)!, id);
      else await flood(ch, id);
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

async function flood(ch: AnyChannel, id: string): Promise<void> {
  let ended!: () => void;
  const f = { sent: 0, hostEnded: new Promise<void>((r) => (ended = r)) };
  floods.set(id, f);
  for (; f.sent < FLOOD; f.sent += 16 * 1024) await ch.send(dataMessage(randomBytes(16 * 1024)));
  while (!(await ch.messages.next()).done) {
    // credit is ignored
  }
  ended();
}

async function open(id: string): Promise<AnyChannel> {
  const call = client.service(Streaming).stream();
  const it = call[Symbol.asyncIterator]();
  await call.send(initMessage(id));
  const ack = await it.next();
  assert.equal(ack.done, false);
  return { send: (m: Any) => call.send(m), messages: it, end: () => call.closeSend() };
}

test("guest-to-host: 4 MiB arrive intact through a slow sink", async () => {
  const payload = randomBytes(4 << 20);
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
  const done = receiveStream(await open("out-1"), sink, "out-1");
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
  const done = receiveStream(await open("out-2"), sink, "out-2");
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
  const sending = sendStream(ch, src, "in-1");
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

test("host-to-guest: 4 MiB of stdin arrive intact through a slow sink", async () => {
  const payload = randomBytes(4 << 20);
  const received: Buffer[] = [];
  let ended!: () => void;
  const finished = new Promise<void>((r) => (ended = r));
  sinks.set(
    "in-2",
    new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        received.push(chunk);
        setTimeout(cb, 1);
      },
      final(cb) {
        ended();
        cb();
      },
    }),
  );
  const src = new PassThrough();
  const sending = sendStream(await open("in-2"), src, "in-2");
  src.end(payload);
  await sending;
  await finished;
  assert.ok(Buffer.concat(received).equals(payload));
});

test("a sender that ignores credit is cut off and the sink never holds more than WINDOW", async () => {
  const { sink, stats, overflow } = stuckSink(WINDOW);
  const receiving = receiveStream(await open("flood-1"), sink, "flood-1");
  await assert.rejects(Promise.race([receiving, overflow]), /stdio stream flood-1: the sender sent \d+ bytes with \d+/);
  const writes = stats.writes;
  // the host ended its side, so the guest learns it was cut off; what it sent meanwhile was dropped, not buffered
  await floods.get("flood-1")!.hostEnded;
  assert.equal(floods.get("flood-1")!.sent, FLOOD);
  assert.equal(stats.writes, writes, "nothing was written to the sink after the cut");
  assert.ok(stats.maxHeld <= WINDOW, `the sink held ${stats.maxHeld} bytes`);
  assert.ok(sink.destroyed, "the sink was closed");
});

test("a huge WindowUpdate lets the sender queue at most MAX_CREDIT; non-positive ones grant nothing", async () => {
  const peer = fakeChannel();
  const source = new PassThrough();
  for (let i = 0; i < 128; i++) source.write(randomBytes(64 * 1024));
  source.end();
  const sent = () => peer.state.dataBytes;
  const sending = sendStream(peer.ch, source, "grant-1");
  peer.push(windowMessage(2 ** 31 - 1));
  await peer.sentUntil(() => sent() >= MAX_CREDIT);
  await tick();
  assert.equal(sent(), MAX_CREDIT, "bytes sent on one hostile grant");
  peer.push(windowMessage(-(2 ** 31)));
  peer.push(windowMessage(0));
  await tick();
  assert.equal(sent(), MAX_CREDIT, "bytes sent after non-positive grants");
  peer.push(windowMessage(WINDOW));
  await peer.sentUntil(() => sent() >= MAX_CREDIT + WINDOW);
  await tick();
  assert.equal(sent(), MAX_CREDIT + WINDOW);
  peer.end();
  await sending;
  assert.ok(source.destroyed, "the source is closed once the peer is gone");
});

test("a receiver that sends Data back is cut off and the source closed", async () => {
  const peer = fakeChannel();
  const source = new PassThrough();
  source.write("waiting for credit");
  const sending = sendStream(peer.ch, source, "back-1");
  peer.push(dataMessage(Buffer.from("not credit")));
  peer.end();
  await assert.rejects(sending, /stdio stream back-1: the receiver sent Data/);
  assert.ok(source.destroyed);
  assert.ok(peer.state.ended, "the channel was ended");
});

test("a sender's WindowUpdate, malformed Data or foreign message is a violation naming the stream", async () => {
  const cases: Array<[Any, RegExp]> = [
    [windowMessage(1), /stdio stream bad: the sender sent a WindowUpdate/],
    [
      { $typeName: "google.protobuf.Any", typeUrl: dataMessage(new Uint8Array()).typeUrl, value: Buffer.from([0xff]) },
      /stdio stream bad: malformed message of type "type.googleapis.com\/containerd.types.transfer.Data"/,
    ],
    [initMessage("x"), /stdio stream bad: got a message of type ".*StreamInit"; only transfer.Data/],
  ];
  for (const [msg, want] of cases) {
    const peer = fakeChannel();
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    const receiving = receiveStream(peer.ch, sink, "bad");
    peer.push(msg);
    peer.end();
    await assert.rejects(receiving, want);
    assert.ok(sink.destroyed && peer.state.ended && peer.state.abandoned, `${msg.typeUrl}: both sides closed`);
  }
});
