import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { Server, Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connectUnix, listenUnix } from "../../../runtime/transport/unix.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "unix-test-"));
});
after(() => rm(dir, { recursive: true, force: true }));

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

// A socket file whose owner died without removing it: a process that binds, listens and is SIGKILLed.
function leaveStaleSocket(socketPath: string): void {
  const script = `require("node:net").createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, "SIGKILL"))`;
  spawnSync(process.execPath, ["-e", script]);
  assert.ok(existsSync(socketPath), "the killed listener should have left its socket file");
}

describe("unix transport", () => {
  test("listen + connect: a round trip, and the socket gets the requested mode", async () => {
    const p = path.join(dir, "echo.sock");
    const server = await listenUnix(p, { mode: 0o600 });
    server.on("connection", (s: Socket) => s.pipe(s));
    assert.equal(statSync(p).mode & 0o777, 0o600);
    const c = await connectUnix(p);
    c.end("hello");
    const chunks: Buffer[] = [];
    for await (const chunk of c) chunks.push(chunk as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), "hello");
    await close(server);
  });

  test("a stale socket file is removed before listening", async () => {
    const p = path.join(dir, "stale.sock");
    leaveStaleSocket(p);
    const server = await listenUnix(p);
    const c = await connectUnix(p);
    c.destroy();
    await close(server);
  });

  test("a live socket is not taken over; a non-socket file is not deleted", async () => {
    const p = path.join(dir, "live.sock");
    const server = await listenUnix(p);
    await assert.rejects(listenUnix(p), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "EADDRINUSE");
      assert.ok(e.message.includes(p) && e.message.includes("another process"), e.message);
      return true;
    });
    await close(server);
    const file = path.join(dir, "regular");
    await writeFile(file, "keep me");
    await assert.rejects(listenUnix(file), /is not a socket/);
    assert.equal(await readFile(file, "utf8"), "keep me");
  });

  test("connect errors carry the errno code and the path", async () => {
    const missing = path.join(dir, "missing.sock");
    await assert.rejects(connectUnix(missing), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "ENOENT");
      assert.ok(e.message.includes(missing), e.message);
      return true;
    });
    const stale = path.join(dir, "refusing.sock");
    leaveStaleSocket(stale);
    await assert.rejects(connectUnix(stale), { code: "ECONNREFUSED" });
  });

  test("the server is a plain net.Server: close() removes the socket file", async () => {
    const p = path.join(dir, "cleanup.sock");
    const server = await listenUnix(p);
    server.close();
    await once(server, "close");
    assert.equal(existsSync(p), false);
  });
});
