import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import type { Any } from "@bufbuild/protobuf/wkt";
import { linksByMac } from "../../../runtime/agent/network.ts";
import { StreamHub } from "../../../runtime/agent/stream-hub.ts";
import { dataMessage } from "../../../runtime/streaming/messages.ts";
import { initMessage, WINDOW } from "../../../runtime/streaming/stdio-stream.ts";
import { stuckSink } from "../streaming/fake-channel.ts";

/** Host side of one stream: the init message, then whatever the test pushes. */
function hostStream(id: string) {
  const queue: Any[] = [initMessage(id)];
  let wake: (() => void) | undefined;
  let ended = false;
  const requests: AsyncIterable<Any> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (!queue.length && !ended) await new Promise<void>((r) => (wake = r));
        if (!queue.length) return;
        yield queue.shift()!;
      }
    },
  };
  const sent: Any[] = [];
  return {
    requests,
    sent,
    push: (m: Any) => {
      queue.push(m);
      wake?.();
    },
    send: async (m: Any) => {
      sent.push(m);
    },
    end: () => {
      ended = true;
      wake?.();
    },
  };
}

test("a stream opened before its process is paired once the process offers its stdout", async () => {
  const hub = new StreamHub();
  const h = hostStream("c/init/stdout");
  const serving = hub.serve(h.requests, h.send, 2000);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(h.sent.length, 1, "acked before the process exists");
  const stdout = new PassThrough();
  hub.offer("c/init/stdout", { kind: "source", stream: stdout });
  stdout.end("bye");
  await new Promise((r) => setTimeout(r, 20));
  assert.match(h.sent[0]!.typeUrl, /google.protobuf.Empty$/);
  h.end();
  await serving;
});

test("a stream for stdio that never appears fails with its name", async () => {
  const hub = new StreamHub();
  const h = hostStream("ghost/init/stdout");
  await assert.rejects(hub.serve(h.requests, h.send, 50), /no process stdio named ghost\/init\/stdout/);
});

test("stdin from the host reaches the process and its end closes the process's stdin", async () => {
  const hub = new StreamHub();
  const stdin = new PassThrough();
  hub.offer("c/init/stdin", { kind: "sink", stream: stdin });
  const h = hostStream("c/init/stdin");
  const serving = hub.serve(h.requests, h.send, 2000);
  h.push(dataMessage(Buffer.from("hello\n")));
  h.end();
  await serving;
  assert.equal(stdin.read()?.toString(), "hello\n");
  assert.ok(stdin.writableEnded);
});

test("stdin from a host past its credit is cut off and the process's stdin holds at most WINDOW", async () => {
  const hub = new StreamHub();
  const { sink, stats, overflow } = stuckSink(WINDOW);
  hub.offer("c/init/stdin", { kind: "sink", stream: sink });
  const h = hostStream("c/init/stdin");
  const serving = hub.serve(h.requests, h.send, 2000);
  for (let i = 0; i < 64; i++) h.push(dataMessage(Buffer.alloc(4096)));
  await assert.rejects(
    Promise.race([serving, overflow]),
    /stdio stream c\/init\/stdin: the sender sent 4096 bytes with 0 bytes of credit left/,
  );
  assert.ok(stats.maxHeld <= WINDOW, `the sink held ${stats.maxHeld} bytes`);
  assert.ok(sink.destroyed, "the process's stdin was closed");
});

test("guest NICs are found by MAC, ignoring those without one", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "sysnet-"));
  try {
    const nics: Array<[string, string]> = [
      ["lo", "00:00:00:00:00:00"],
      ["eth0", "AA:BB:CC:00:11:22"],
    ];
    for (const [name, mac] of nics) {
      await mkdir(path.join(dir, name));
      await writeFile(path.join(dir, name, "address"), `${mac}\n`);
    }
    assert.deepEqual([...linksByMac(dir)], [["aa:bb:cc:00:11:22", "eth0"]]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
