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
import { dataMessage, parseMessage, windowMessage } from "../../../runtime/streaming/messages.ts";
import { relayStreams } from "../../../runtime/streaming/relay.ts";
import { Rendezvous } from "../../../runtime/streaming/rendezvous.ts";
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

// containerd (a client) -> the host's Streaming service, which relays each stream to the guest's (a second server).
// Each test says what the guest does with a stream by its id; relays are offered under the same id.
const guests = new Map<string, (ch: AnyChannel) => Promise<void>>();
const relays = new Rendezvous<{ done: Promise<void> }>();
let dir: string;
const servers: TtrpcServer[] = [];
let toGuest: TtrpcClient;
let containerd: TtrpcClient;

async function listen(server: TtrpcServer, name: string): Promise<string> {
  const listener = net.createServer();
  server.serve(listener);
  const sock = path.join(dir, name);
  await new Promise<void>((r) => listener.listen(sock, r));
  servers.push(server);
  return sock;
}

const serverChannel = (requests: AsyncIterable<Any>, out: { send(m: Any): Promise<void> }): AnyChannel => ({
  send: (m) => out.send(m),
  messages: requests[Symbol.asyncIterator](),
  end: () => {},
});

async function open(client: TtrpcClient, id: string): Promise<AnyChannel> {
  const call = client.service(Streaming).stream();
  const it = call[Symbol.asyncIterator]();
  await call.send(initMessage(id));
  assert.equal((await it.next()).done, false, `stream ${id} acked`);
  return { send: (m: Any) => call.send(m), messages: it, end: () => call.closeSend() };
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "relay-"));
  const guestSock = await listen(
    new TtrpcServer().register(Streaming, {
      stream: async (requests, out) => {
        const ch = serverChannel(requests, out);
        const id = await readInit(ch);
        await out.send(ackMessage());
        await guests.get(id)!(ch);
      },
    }),
    "guest.sock",
  );
  toGuest = new TtrpcClient(net.connect(guestSock));
  const hostSock = await listen(
    new TtrpcServer().register(Streaming, {
      stream: async (requests, out) => {
        const host = serverChannel(requests, out);
        const id = await readInit(host);
        await out.send(ackMessage());
        const done = relayStreams(host, await open(toGuest, id), id);
        relays.offer(id, { done });
        await done;
      },
    }),
    "host.sock",
  );
  containerd = new TtrpcClient(net.connect(hostSock));
});

after(async () => {
  containerd.close();
  toGuest.close();
  for (const s of servers) await s.close();
  await rm(dir, { recursive: true, force: true });
});

const relayOf = async (id: string) => (await relays.claim(id, 5000, "relay")).done;

function slowSink(received: Buffer[], onFinish?: () => void): Writable {
  return new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      received.push(chunk);
      setTimeout(cb, 1);
    },
    final(cb) {
      onFinish?.();
      cb();
    },
  });
}

/** What containerd reads until the stream fails (or brings more than `limit` bytes): Data bytes and the error. */
async function drain(ch: AnyChannel, limit = 0): Promise<{ bytes: number; error: Error }> {
  let bytes = 0;
  try {
    for (;;) {
      const r = await ch.messages.next();
      if (r.done) throw new Error("the stream ended without an error");
      const m = parseMessage(r.value, "containerd");
      if (m.kind === "data") bytes += m.data.length;
      if (bytes > limit) throw new Error(`${bytes} bytes arrived, over the ${limit} granted`);
    }
  } catch (error) {
    return { bytes, error: error as Error };
  }
}

/** The guest's side: resolves when the host ends it (the relay cut it off). */
async function untilHostEnds(ch: AnyChannel): Promise<void> {
  while (!(await ch.messages.next()).done) {
    // whatever the host sends is ignored
  }
}

test("stdout: 4 MiB from the guest reach containerd through a slow sink", async () => {
  const payload = randomBytes(4 << 20);
  const source = new PassThrough();
  guests.set("out-1", (ch) => sendStream(ch, source, "out-1"));
  const received: Buffer[] = [];
  const receiving = receiveStream(await open(containerd, "out-1"), slowSink(received), "out-1");
  source.end(payload);
  await receiving;
  await relayOf("out-1");
  assert.ok(Buffer.concat(received).equals(payload));
});

test("stdin: 4 MiB from containerd reach the guest through a slow sink", async () => {
  const payload = randomBytes(4 << 20);
  const received: Buffer[] = [];
  let finished!: () => void;
  const sinkEnded = new Promise<void>((r) => (finished = r));
  guests.set("in-1", (ch) => receiveStream(ch, slowSink(received, finished), "in-1"));
  const source = new PassThrough();
  const sending = sendStream(await open(containerd, "in-1"), source, "in-1");
  source.end(payload);
  await sending;
  await sinkEnded;
  await relayOf("in-1");
  assert.ok(Buffer.concat(received).equals(payload));
});

test("a guest sending past containerd's credit is refused and both sides end", async () => {
  let ended!: () => void;
  const guestEnded = new Promise<void>((r) => (ended = r));
  guests.set("overrun-1", async (ch) => {
    await ch.messages.next(); // containerd's first grant
    for (let i = 0; i < 8; i++) await ch.send(dataMessage(randomBytes(16 * 1024)));
    await untilHostEnds(ch);
    ended();
  });
  const ch = await open(containerd, "overrun-1");
  await ch.send(windowMessage(WINDOW));
  const { bytes, error } = await drain(ch, WINDOW);
  assert.equal(bytes, WINDOW, "containerd got what it granted and no more");
  const violation = /stdio stream overrun-1: the guest sent 16384 bytes with 0 bytes of containerd's credit left/;
  assert.match(error.message, violation);
  await assert.rejects(relayOf("overrun-1"), violation);
  await guestEnded; // the relay ended the guest's stream, or this never settles
});

test("a guest sending anything but Data or WindowUpdate is refused", async () => {
  const malformed: Any = {
    $typeName: "google.protobuf.Any",
    typeUrl: dataMessage(new Uint8Array()).typeUrl,
    value: Buffer.from([0x0a, 0x7f]),
  };
  const cases: Array<[string, Any, RegExp]> = [
    ["foreign-1", initMessage("x"), /stdio stream foreign-1: got a message of type ".*StreamInit"/],
    ["malformed-1", malformed, /stdio stream malformed-1: malformed message of type ".*transfer.Data"/],
  ];
  for (const [id, msg, want] of cases) {
    guests.set(id, async (ch) => {
      await ch.send(msg);
      await untilHostEnds(ch);
    });
    const { error } = await drain(await open(containerd, id));
    assert.match(error.message, want);
    await assert.rejects(relayOf(id), want);
  }
});

test("the guest's WindowUpdates reach containerd: non-positive ones dropped, outstanding credit capped", async () => {
  guests.set("grants-1", async (ch) => {
    for (const n of [-1, 0, 2 ** 31 - 1, 5]) await ch.send(windowMessage(n));
    await ch.messages.next(); // containerd's 10 bytes
    await ch.send(windowMessage(100));
  });
  const ch = await open(containerd, "grants-1");
  const updates: number[] = [];
  const next = async () => {
    const r = await ch.messages.next();
    if (r.done) return undefined;
    const m = parseMessage(r.value, "grants-1");
    assert.equal(m.kind, "window");
    return m.kind === "window" ? m.update : undefined;
  };
  updates.push((await next())!);
  await ch.send(dataMessage(randomBytes(10)));
  for (let u = await next(); u !== undefined; u = await next()) updates.push(u);
  assert.deepEqual(updates, [MAX_CREDIT, 10]);
  await relayOf("grants-1");
});

test("containerd going away ends the guest's stream and the relay", async () => {
  let ended!: () => void;
  const guestEnded = new Promise<void>((r) => (ended = r));
  guests.set("gone-1", async (ch) => {
    await untilHostEnds(ch);
    ended();
  });
  const own = new TtrpcClient(net.connect(path.join(dir, "host.sock")));
  await open(own, "gone-1");
  const relay = relayOf("gone-1");
  own.close();
  await assert.rejects(relay, /connection closed/);
  await guestEnded;
});

test("a failed relay settles even when a pending read ignores return()", async () => {
  let guestEnded = false;
  const host: AnyChannel = {
    send: async () => {},
    messages: { next: () => Promise.reject(new Error("containerd's side failed")) },
    end: () => {},
  };
  const guest: AnyChannel = {
    send: async () => {},
    messages: { next: () => new Promise(() => {}) },
    end: () => {
      guestEnded = true;
    },
  };
  await assert.rejects(relayStreams(host, guest, "stuck-1"), /containerd's side failed/);
  assert.ok(guestEnded, "the guest's side was ended");
});
