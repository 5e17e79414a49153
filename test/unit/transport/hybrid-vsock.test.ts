import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { dialHybridVsock, HybridVsockListener } from "../../../runtime/transport/hybrid-vsock.ts";

let dir: string;
let n = 0;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "hvsock-test-"));
});
after(() => rm(dir, { recursive: true, force: true }));

const sockPath = () => path.join(dir, `vmm-${n++}.sock`);

async function readAll(s: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

/** A misbehaving VMM: runs `onRequest` with the socket once the CONNECT line arrived. */
async function rawVmm(p: string, onRequest: (s: Socket) => void): Promise<Server> {
  const server = createServer((s) => {
    s.on("error", () => {});
    s.once("data", () => onRequest(s));
  });
  server.listen(p);
  await once(server, "listening");
  return server;
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe("hybrid vsock dialer against the VMM emulator", () => {
  test("CONNECT <port> is answered with OK and the stream reaches the guest port's handler", async () => {
    const p = sockPath();
    const vmm = await HybridVsockListener.listen(p);
    vmm.handle(1024, (s) => s.pipe(s));
    const c = await dialHybridVsock(p, 1024);
    c.end("through the guest");
    assert.equal(await readAll(c), "through the guest");
    await vmm.close();
  });

  test("bytes sent right behind the OK line are not lost", async () => {
    const p = sockPath();
    const vmm = await rawVmm(p, (s) => s.end("OK 77\nfirst bytes from the guest"));
    const c = await dialHybridVsock(p, 1024);
    assert.equal(await readAll(c), "first bytes from the guest");
    await close(vmm);
  });

  test("no VMM: ENOENT for a missing socket, ECONNREFUSED for a dead one, both naming path and port", async () => {
    const missing = sockPath();
    await assert.rejects(dialHybridVsock(missing, 1024), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "ENOENT");
      assert.ok(e.message.includes(`hybrid vsock ${missing} port 1024`), e.message);
      return true;
    });
    const dead = sockPath();
    spawnSync(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(dead)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    await assert.rejects(dialHybridVsock(dead, 1024), { code: "ECONNREFUSED" });
  });

  test("a reply without OK is a rejection quoting the reply", async () => {
    const p = sockPath();
    const vmm = await rawVmm(p, (s) => s.write("ERR no such port\n"));
    await assert.rejects(dialHybridVsock(p, 9), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "EHVSOCKREJECTED");
      assert.match(e.message, /port 9: the VMM answered "ERR no such port" instead of OK/);
      return true;
    });
    await close(vmm);
  });

  test("nothing listening on the guest port: the VMM closes, reported as EHVSOCKCLOSED", async () => {
    const p = sockPath();
    const vmm = await HybridVsockListener.listen(p);
    await assert.rejects(dialHybridVsock(p, 1025), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "EHVSOCKCLOSED");
      assert.match(e.message, /port 1025: the connection closed before the OK line/);
      return true;
    });
    await vmm.close();
  });

  test("a VMM that never answers times out", { timeout: 60_000 }, async () => {
    const p = sockPath();
    const vmm = await rawVmm(p, () => {});
    await assert.rejects(dialHybridVsock(p, 1024, { timeoutMs: 200 }), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "ETIMEDOUT");
      assert.match(e.message, /no reply to CONNECT within 200 ms/);
      return true;
    });
    await close(vmm);
  });

  test("retries until the VMM socket appears and then until the guest listens", async () => {
    const p = sockPath();
    let vmm: HybridVsockListener | undefined;
    setTimeout(async () => {
      vmm = await HybridVsockListener.listen(p);
      setTimeout(() => vmm?.handle(1024, (s) => s.end("ready")), 200);
    }, 200);
    const started = performance.now();
    const c = await dialHybridVsock(p, 1024, {
      timeoutMs: 500,
      retry: { deadlineMs: 5000, backoffMs: 20, maxBackoffMs: 50 },
    });
    assert.equal(await readAll(c), "ready");
    assert.ok(performance.now() - started >= 350, "should have needed retries");
    await vmm?.close();
  });

  test("gives up after the configured attempts and says so", async () => {
    const p = sockPath();
    await assert.rejects(
      dialHybridVsock(p, 1024, { retry: { attempts: 3, backoffMs: 10 } }),
      (e: Error & { attempts?: number }) => {
        assert.equal(e.attempts, 3);
        assert.match(e.message, /gave up after 3 attempts/);
        return true;
      },
    );
  });

  test("a reply that is not a line is rejected", async () => {
    const p = sockPath();
    const vmm = await rawVmm(p, (s) => s.write("x".repeat(600)));
    await assert.rejects(dialHybridVsock(p, 1024), { code: "EHVSOCKREJECTED" });
    await close(vmm);
  });
});

describe("hybrid vsock against the real vhost-device-vsock (no guest attached)", () => {
  let daemon: ChildProcess | undefined;
  after(() => {
    daemon?.kill("SIGKILL");
  });

  test("its UDS accepts, then closes the connection without OK: a clear EHVSOCKCLOSED naming path and port", async () => {
    const bin = "vhost-device-vsock";
    if (spawnSync(bin, ["--help"]).error) {
      assert.fail(`${bin} is not installed: apt-get install -y vhost-device-vsock/sid (see docs; sid pinned low)`);
    }
    const uds = path.join(dir, "task.vsock");
    daemon = spawn(bin, ["--guest-cid", "3", "--socket", path.join(dir, "vhost.sock"), "--uds-path", uds], {
      stdio: "ignore",
    });
    for (let i = 0; i < 100 && !existsSync(uds); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(uds), "vhost-device-vsock did not create its UDS within 5 s");
    await assert.rejects(
      dialHybridVsock(uds, 1024, { timeoutMs: 2000, retry: { attempts: 2, backoffMs: 20 } }),
      (e: NodeJS.ErrnoException) => {
        assert.equal(e.code, "EHVSOCKCLOSED");
        assert.ok(e.message.includes(`hybrid vsock ${uds} port 1024`), e.message);
        return true;
      },
    );
  });
});
