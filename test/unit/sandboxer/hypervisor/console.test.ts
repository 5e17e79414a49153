import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { constants } from "node:fs";
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ConsoleCapture } from "../../../../runtime/sandboxer/hypervisor/console.ts";
import { env } from "../fixtures/driver-env.ts";

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "kuasar-console-"));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Polls until check() holds; fails with what() when it never does. */
async function until(check: () => Promise<boolean>, what: () => Promise<string> | string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await check()) return;
    await sleep(25);
  }
  assert.fail(await what());
}

const sizeOf = (f: string) =>
  stat(f).then(
    (s) => s.size,
    () => -1,
  );

/**
 * A VMM's console socket: it listens, sends each client what onClient writes, and counts what the client's socket
 * accepted. Stops sending when the client goes.
 */
class FakeVmm {
  private readonly connections = new Set<net.Socket>();
  readonly server = net.createServer((c) => {
    this.clients++;
    this.connections.add(c);
    c.on("close", () => this.connections.delete(c));
    c.on("error", () => {});
    this.onClient(c);
  });
  clients = 0;
  constructor(
    readonly socket: string,
    private readonly onClient: (c: net.Socket) => void,
  ) {}
  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.socket, r));
  }
  close(): Promise<void> {
    for (const c of this.connections) c.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A guest printing numbered lines as fast as its socket takes them, until `total` bytes; returns what was sent. */
function flood(c: net.Socket, total: number, sent: { bytes: number }): void {
  let n = 0;
  const next = () => {
    while (sent.bytes < total && !c.destroyed) {
      let chunk = "";
      while (chunk.length < 8192) chunk += `${String(n++).padStart(10, "0")} flood\n`;
      const buf = Buffer.from(chunk).subarray(0, Math.min(chunk.length, total - sent.bytes));
      sent.bytes += buf.length;
      if (!c.write(buf)) return void c.once("drain", next);
    }
    if (sent.bytes >= total) c.end();
  };
  next();
}

/** The stream a flood of `total` bytes sends (what flood() writes). */
function floodText(total: number): string {
  let s = "";
  for (let n = 0; s.length < total; n++) s += `${String(n).padStart(10, "0")} flood\n`;
  return s.slice(0, total);
}

describe("console capture", () => {
  test("connects once the VMM has created its socket and appends what the guest prints", async () => {
    const dir = await mkdtemp(path.join(tmp, "basic-"));
    const file = path.join(dir, "console.log");
    await writeFile(file, "earlier boot\n");
    const vmm = new FakeVmm(path.join(dir, "console.sock"), (c) => c.write("Linux version 6.12\n"));
    // The reader starts first, as it does right after the VMM is spawned.
    const capture = new ConsoleCapture({ socket: vmm.socket, file, maxBytes: 1 << 20 }, env.log);
    await sleep(100);
    await vmm.listen();
    try {
      const want = "earlier boot\nLinux version 6.12\n";
      await until(
        async () => (await readFile(file, "utf8")) === want,
        async () => `console.log holds ${JSON.stringify(await readFile(file, "utf8"))}`,
      );
    } finally {
      await capture.stop();
      await vmm.close();
    }
  });

  test("attack: a guest flooding its console never grows console.log past the cap; one old file is kept", async () => {
    const dir = await mkdtemp(path.join(tmp, "flood-"));
    const file = path.join(dir, "console.log");
    const max = 64 * 1024;
    const total = 3 * 1024 * 1024;
    const sent = { bytes: 0 };
    const vmm = new FakeVmm(path.join(dir, "console.sock"), (c) => flood(c, total, sent));
    await vmm.listen();
    const capture = new ConsoleCapture({ socket: vmm.socket, file, maxBytes: max }, env.log);
    let largest = 0;
    let done = false;
    const watch = (async () => {
      while (!done) {
        largest = Math.max(largest, await sizeOf(file));
        await sleep(1);
      }
    })();
    try {
      // The whole flood has passed once the last bytes sent are the last bytes kept.
      const tail = floodText(total).slice(-100);
      await until(
        async () => sent.bytes === total && (await readFile(file, "utf8").catch(() => "")).endsWith(tail),
        async () => `sent ${sent.bytes} of ${total}; console.log is ${await sizeOf(file)} bytes`,
      );
    } finally {
      done = true;
      await watch;
      await capture.stop();
      await vmm.close();
    }
    assert.ok(largest <= max, `console.log reached ${largest} bytes, over the ${max} cap`);
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith("console.log")).sort(), [
      "console.log",
      "console.log.1",
    ]);
    // Guest output is for root: a new file is not readable by other users.
    assert.equal((await stat(file)).mode & 0o007, 0);
    assert.equal(await sizeOf(`${file}.1`), max);
    // Rotation loses nothing it keeps: the two files are the end of the stream, in order.
    const kept = (await readFile(`${file}.1`, "utf8")) + (await readFile(file, "utf8"));
    assert.equal(kept, floodText(total).slice(-kept.length));
    assert.equal(kept.length, max + (total % max || max));
  });

  test("a restarted daemon continues the file and its size count; a restarted VMM is reconnected", async () => {
    const dir = await mkdtemp(path.join(tmp, "restart-"));
    const file = path.join(dir, "console.log");
    const max = 1000;
    // What the previous daemon left: 990 bytes, 10 short of the cap.
    await writeFile(file, `${"a".repeat(989)}\n`);
    let vmm = new FakeVmm(path.join(dir, "console.sock"), (c) => c.end("first boot: 20 bytes\n"));
    await vmm.listen();
    const capture = new ConsoleCapture({ socket: vmm.socket, file, maxBytes: max }, env.log);
    try {
      await until(
        async () => (await sizeOf(`${file}.1`)) === max && (await sizeOf(file)) === 11,
        async () => `console.log.1 ${await sizeOf(`${file}.1`)} bytes, console.log ${await sizeOf(file)}`,
      );
      assert.equal(await readFile(`${file}.1`, "utf8"), `${"a".repeat(989)}\nfirst boot`);
      assert.equal(await readFile(file, "utf8"), ": 20 bytes\n");
      // The VMM goes away and a new one listens on the same path: the reader comes back by itself.
      await vmm.close();
      await rm(vmm.socket, { force: true });
      vmm = new FakeVmm(vmm.socket, (c) => c.write("second boot\n"));
      await vmm.listen();
      await until(
        async () => (await readFile(file, "utf8")).endsWith("second boot\n"),
        async () => `console.log holds ${JSON.stringify(await readFile(file, "utf8"))}`,
      );
      assert.equal(vmm.clients, 1);
      // The daemon restarts while the VMM runs on: the next reader picks up where the file ends.
      await capture.stop();
      const again = new ConsoleCapture({ socket: vmm.socket, file, maxBytes: max }, env.log);
      await until(
        async () => (await readFile(file, "utf8")) === ": 20 bytes\nsecond boot\nsecond boot\n",
        async () => `console.log holds ${JSON.stringify(await readFile(file, "utf8"))}`,
      );
      await again.stop();
      assert.equal(vmm.clients, 2);
    } finally {
      await capture.stop();
      await vmm.close();
    }
  });

  test("attack: backpressure: while console.log does not take writes, the guest's output stays in its VMM", async () => {
    const dir = await mkdtemp(path.join(tmp, "stall-"));
    // A FIFO nobody reads stands in for a file system that does not keep up: each write waits for room.
    const file = path.join(dir, "console.log");
    execFileSync("mkfifo", [file]);
    const fifo = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    const sent = { bytes: 0 };
    const total = 256 * 1024 * 1024;
    const vmm = new FakeVmm(path.join(dir, "console.sock"), (c) => flood(c, total, sent));
    await vmm.listen();
    const capture = new ConsoleCapture({ socket: vmm.socket, file, maxBytes: total }, env.log);
    try {
      await until(
        async () => sent.bytes > 0,
        () => "the reader never connected",
      );
      // Long enough for an unbounded reader to take hundreds of MiB off a unix socket.
      await sleep(1500);
      const stalled = sent.bytes;
      // Socket buffers on both sides, the reader's stream buffer and one pipe's worth: a few MiB at most.
      assert.ok(stalled < 8 * 1024 * 1024, `${stalled} bytes left the VMM while nothing could be written`);
      await sleep(300);
      assert.ok(sent.bytes - stalled < 1024 * 1024, `${sent.bytes - stalled} more bytes while still stalled`);
    } finally {
      // The pending write returns once the FIFO is read.
      let draining = true;
      const drained = (async () => {
        const buf = Buffer.alloc(1 << 20);
        while (draining) {
          await fifo.read(buf, 0, buf.length).catch(() => undefined);
          await sleep(5);
        }
      })();
      await capture.stop();
      draining = false;
      await drained;
      await fifo.close();
      await vmm.close();
    }
  });
});
