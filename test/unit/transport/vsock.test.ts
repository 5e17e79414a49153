import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  connectVsock,
  listenVsock,
  localCid,
  VMADDR_PORT_ANY,
  type VsockServer,
  type VsockSocket,
} from "../../../runtime/transport/vsock.ts";
import { vsockAddonCandidates } from "../../../runtime/transport/vsock-addon.ts";
import { vsockTestHooks } from "../../../testkit/vsock.ts";
import { nativeArtifacts } from "../native/artifacts.ts";
import { repoModule, runAsNobody } from "./nobody.ts";

let dir: string;

before(async () => {
  await nativeArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "vsock-test-"));
});
after(() => rm(dir, { recursive: true, force: true }));

function collect(s: VsockSocket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on("data", (c: Buffer) => chunks.push(c));
  return once(s, "end").then(() => Buffer.concat(chunks));
}

// 'close' can fire in the same tick as 'end', before an awaiting test resumes.
function closed(s: VsockSocket): Promise<unknown> {
  return s.closed ? Promise.resolve() : once(s, "close");
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

describe("addon loading", () => {
  function loadIn(moduleFile: string, env: Record<string, string | undefined>): string {
    const script = `import(${JSON.stringify(moduleFile)}).then((m) => { try { m.native(); console.log("loaded"); } catch (e) { console.log(e.message); } });`;
    return spawnSync(process.execPath, ["--import", "tsx", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, ...env },
    }).stdout;
  }

  test("candidates: beside the bundle, install-vmm's lib dir beside an installed daemon, then the node-gyp build", () => {
    const list = vsockAddonCandidates();
    assert.match(list[0] ?? "", /runtime\/transport\/vsock\.node$/);
    assert.match(list[1] ?? "", /runtime\/lib\/kuasar-vmm\/vsock\.node$/);
    assert.match(list[2] ?? "", /runtime\/native\/vsock\/build\/Release\/vsock\.node$/);
  });

  test("a KUASAR_VSOCK_ADDON that does not exist is an error, not a silent fallback", () => {
    const mod = fileURLToPath(new URL("../../../runtime/transport/vsock-addon.ts", import.meta.url));
    assert.match(
      loadIn(mod, { KUASAR_VSOCK_ADDON: "/nonexistent/vsock.node" }),
      /KUASAR_VSOCK_ADDON=\/nonexistent\/vsock.node does not exist/,
    );
  });

  test("with no addon anywhere, the error lists where it looked and how to build it", async () => {
    // .mts: outside the repo there is no package.json saying "type": "module".
    const copy = path.join(dir, "bundle-like", "vsock-addon.mts");
    await mkdir(path.dirname(copy));
    await copyFile(fileURLToPath(new URL("../../../runtime/transport/vsock-addon.ts", import.meta.url)), copy);
    const out = loadIn(copy, { KUASAR_VSOCK_ADDON: undefined });
    assert.match(out, /vsock addon not found \(looked at: .*bundle-like\/vsock.node/);
    assert.match(out, /npx tsx runtime\/native\/build.ts/);
  });
});

describe("stream semantics (same native code over a socketpair)", () => {
  test("data both ways; end() half-closes and the peer sees 'end' then can still answer", async () => {
    const [a, b] = vsockTestHooks.socketPair({ allowHalfOpen: true });
    const gotB = collect(b);
    a.end("ping");
    assert.equal((await gotB).toString(), "ping");
    const gotA = collect(a);
    b.end("pong");
    assert.equal((await gotA).toString(), "pong");
    await Promise.all([closed(a), closed(b)]);
  });

  test("without allowHalfOpen the socket ends its side when the peer ends (like net.Socket)", async () => {
    const [a, b] = vsockTestHooks.socketPair();
    const gotA = collect(a);
    b.resume();
    a.end();
    await gotA;
    await Promise.all([closed(a), closed(b)]);
  });

  test("8 MiB arrives intact; write() reports backpressure while the reader is paused", async () => {
    const [a, b] = vsockTestHooks.socketPair();
    const payload = randomBytes(8 * 1024 * 1024);
    b.pause();
    let sawBackpressure = false;
    for (let off = 0; off < payload.length; off += 256 * 1024) {
      if (!a.write(payload.subarray(off, off + 256 * 1024))) sawBackpressure = true;
    }
    assert.ok(sawBackpressure, "write() never returned false with a paused reader");
    assert.ok(a.writableLength > 0, "everything fit in the kernel buffer; the test needs a paused reader to push back");
    const got = collect(b);
    b.resume();
    a.resume();
    a.end();
    assert.equal(sha(await got), sha(payload));
    await closed(a);
  });

  test("destroy() closes both ends; 'close' is emitted once", async () => {
    const [a, b] = vsockTestHooks.socketPair();
    let closes = 0;
    a.on("close", () => closes++);
    const ended = once(b, "end");
    b.resume();
    a.destroy();
    await ended;
    await closed(b);
    assert.equal(closes, 1);
    assert.equal(a.destroyed, true);
  });

  test("a peer closing with unread data gives ECONNRESET with errno and syscall", async () => {
    const [a, b] = vsockTestHooks.socketPair();
    a.write("unread by b");
    await new Promise((r) => setTimeout(r, 20));
    a.resume();
    b.destroy();
    const [err] = (await once(a, "error")) as [NodeJS.ErrnoException];
    assert.equal(err.code, "ECONNRESET");
    assert.equal(err.errno, -os.constants.errno.ECONNRESET);
    assert.equal(err.syscall, "read");
    assert.match(err.message, /ECONNRESET.*socketpair\[0\]/);
  });

  test("writing to a closed peer fails with EPIPE (no SIGPIPE)", async () => {
    const [a, b] = vsockTestHooks.socketPair();
    b.destroy();
    await closed(b);
    a.write("x");
    const [err] = (await once(a, "error")) as [NodeJS.ErrnoException];
    assert.equal(err.code, "EPIPE");
  });
});

describe("server and connect (AF_UNIX test hooks)", () => {
  test("accepted connections arrive through the async iterator; close() ends the iterator", async () => {
    const sockPath = path.join(dir, "srv.sock");
    const server = vsockTestHooks.listenUnix(sockPath);
    assert.equal(server.address(), sockPath);
    const seen: string[] = [];
    const served = (async () => {
      for await (const conn of server) {
        const chunks: Buffer[] = [];
        for await (const c of conn) chunks.push(c as Buffer);
        seen.push(Buffer.concat(chunks).toString());
        conn.end();
      }
    })();
    for (const msg of ["one", "two", "three"]) {
      const c = await vsockTestHooks.connectUnix(sockPath, 2000);
      c.end(msg);
      c.resume();
      await closed(c);
    }
    server.close();
    await served;
    assert.deepEqual(seen, ["one", "two", "three"]);
    assert.equal(server.listening, false);
  });

  test("connect to a missing path fails with ENOENT naming it; to a dead socket with ECONNREFUSED", async () => {
    const missing = path.join(dir, "missing.sock");
    await assert.rejects(vsockTestHooks.connectUnix(missing, 1000), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "ENOENT");
      assert.ok(e.message.includes(missing), e.message);
      return true;
    });
    const dead = path.join(dir, "dead.sock");
    vsockTestHooks.listenUnix(dead).close();
    await assert.rejects(vsockTestHooks.connectUnix(dead, 1000), { code: "ECONNREFUSED" });
  });

  test("closing a server while an iterator waits ends the iteration cleanly", async () => {
    const server = vsockTestHooks.listenUnix(path.join(dir, "idle.sock"));
    const it = server[Symbol.asyncIterator]();
    const pending = it.next();
    server.close();
    assert.deepEqual(await pending, { value: undefined, done: true });
  });
});

test("unref()'d servers and sockets do not keep the process alive", () => {
  const mod = fileURLToPath(new URL("../../../runtime/transport/vsock.ts", import.meta.url));
  const testkit = fileURLToPath(new URL("../../../testkit/vsock.ts", import.meta.url));
  const script = [
    `import { listenVsock, VMADDR_PORT_ANY } from ${JSON.stringify(mod)};`,
    `import { vsockTestHooks } from ${JSON.stringify(testkit)};`,
    "listenVsock({ port: VMADDR_PORT_ANY }).unref();",
    "const [a, b] = vsockTestHooks.socketPair();",
    "a.resume();",
    "a.unref();",
    "b.unref();",
  ].join("\n");
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(r.signal, null, "the process was still running after 30 s");
  assert.equal(r.status, 0, r.stderr);
});

describe("AF_VSOCK on this host", () => {
  test("listen on a kernel-chosen port; a second listen on it fails with EADDRINUSE naming the port", async () => {
    const server = listenVsock({ port: VMADDR_PORT_ANY });
    const addr = server.address();
    assert.ok(typeof addr !== "string");
    assert.ok(addr.port > 1023 && addr.port !== VMADDR_PORT_ANY, `port ${addr.port}`);
    assert.throws(
      () => listenVsock({ port: addr.port }),
      (e: NodeJS.ErrnoException) => e.code === "EADDRINUSE" && e.message.includes(`port ${addr.port}`),
    );
    server.close();
    await once(server, "close");
    listenVsock({ port: addr.port }).close();
  });

  test("connect to an unreachable CID fails clearly within the timeout without blocking the event loop", {
    timeout: 60_000,
  }, async () => {
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      await assert.rejects(connectVsock({ cid: 1, port: 49999, timeoutMs: 400 }), (e: NodeJS.ErrnoException) => {
        // ETIMEDOUT where nothing answers (no vsock loopback); ECONNRESET/ENODEV where a transport rejects it.
        assert.ok(
          ["ETIMEDOUT", "ECONNRESET", "ENODEV", "ECONNREFUSED", "EHOSTUNREACH"].includes(e.code ?? ""),
          e.message,
        );
        assert.match(e.message, /vsock cid 1 port 49999/);
        if (e.code === "ETIMEDOUT") {
          // The 10 ms ticker is due long before the 400 ms timeout: a connect that waited in a blocking syscall
          // rejects before it ever runs.
          assert.ok(ticks > 0, "the event loop did not run while the connect waited for its timeout");
        }
        return true;
      });
    } finally {
      clearInterval(ticker);
    }
  });

  test("invalid ports and timeouts are rejected before any syscall", async () => {
    await assert.rejects(connectVsock({ cid: 3, port: -1 }), /vsock port must be an integer/);
    await assert.rejects(connectVsock({ cid: 3, port: 1024, timeoutMs: 0 }), /timeoutMs must be >= 1/);
  });

  test("localCid() reads /dev/vsock or says why it cannot", () => {
    if (existsSync("/dev/vsock")) {
      const cid = localCid();
      assert.ok(Number.isInteger(cid) && cid >= 2, `cid ${cid}`);
    } else {
      assert.throws(() => localCid(), /\/dev\/vsock/);
    }
  });
});

// The guest agent serves vhost-vsock peers only from ports <= 1023, which only root can bind. This host has AF_VSOCK
// but no loopback to the guest side: cid 1 never answers, so a connect that got past the bind stays in flight.
describe("privileged source port (the daemon's proof to the guest agent)", () => {
  const unreachable = { cid: 1, port: 50000, timeoutMs: 300 };
  const isConnectError = (e: NodeJS.ErrnoException) => {
    assert.equal(e.syscall, "connect", e.message);
    assert.match(e.message, /vsock cid 1 port 50000/);
    return true;
  };

  test("as root: 1023 is bound before the connect, held while it is in flight, and freed after", async () => {
    // Whether a listener could take port 1023 now (it is closed again at once).
    const probe = () => {
      try {
        listenVsock({ port: 1023 }).close();
        return "free";
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
    };
    assert.equal(probe(), "free");
    const attempt = connectVsock({ ...unreachable, privilegedPort: true });
    const during = probe();
    await assert.rejects(attempt, isConnectError);
    assert.equal(during, "EADDRINUSE");
    assert.equal(probe(), "free");
  });

  test("ports in use are skipped downwards; with all of 1..1023 taken the bind error says so", async () => {
    const held: VsockServer[] = [];
    try {
      for (let port = 1; port <= 1023; port++) {
        try {
          held.push(listenVsock({ port }));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
        }
      }
      await assert.rejects(
        connectVsock({ ...unreachable, privilegedPort: true }),
        (e: NodeJS.ErrnoException) =>
          e.code === "EADDRINUSE" &&
          e.syscall === "bind" &&
          /every privileged vsock source port \(1\.\.1023\) is in use/.test(e.message),
      );
      // Only the lowest port free: the search must walk past every taken one to reach it.
      const lowest = held.shift()!;
      lowest.close();
      await assert.rejects(connectVsock({ ...unreachable, privilegedPort: true }), isConnectError);
    } finally {
      for (const s of held) s.close();
    }
  });

  test("as nobody: the privileged bind is refused with EACCES saying root is needed; a plain connect still runs", () => {
    const r = runAsNobody(`
      const { connectVsock } = await import(${repoModule("runtime/transport/vsock.ts")});
      const fail = (e) => ({ code: e.code, syscall: e.syscall, message: e.message });
      const privileged = await connectVsock({ cid: 1, port: 50000, timeoutMs: 300, privilegedPort: true }).then(() => "connected", fail);
      const plain = await connectVsock({ cid: 1, port: 50000, timeoutMs: 300 }).then(() => "connected", fail);
      console.log(JSON.stringify({ uid: process.getuid(), privileged, plain }));
    `);
    assert.equal(r.uid, 65534);
    const privileged = r.privileged as { code: string; syscall: string; message: string };
    assert.equal(privileged.code, "EACCES");
    assert.equal(privileged.syscall, "bind");
    assert.match(
      privileged.message,
      /vsock cid 1 port 50000: binding a privileged vsock source port \(<= 1023\) needs root/,
    );
    assert.equal((r.plain as { syscall: string }).syscall, "connect");
  });
});
