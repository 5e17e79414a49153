import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import {
  acceptHostOnly,
  HOST_CID,
  type Peer,
  type PeerSocket,
  RefusalLog,
  refusePeer,
} from "../../../runtime/agent/peer-check.ts";
import { vsockTestHooks } from "../../../testkit/vsock.ts";
import { nativeArtifacts } from "../native/artifacts.ts";

const host = (port: number): Peer => ({ cid: HOST_CID, port });

describe("refusePeer: who may use the agent's ports", () => {
  test("vhost-vsock (no task.hybrid_vsock): the host from a privileged port only", () => {
    for (const port of [0, 1, 512, 1023]) assert.equal(refusePeer(host(port), { hybrid: false }), null, `port ${port}`);
    // Any local user or unconfined pod on the host connects from an unprivileged port.
    for (const port of [1024, 1025, 49152, 0x4000_0000, 0xffff_fffe]) {
      assert.match(refusePeer(host(port), { hybrid: false }) ?? "accepted", /source port above 1023/, `port ${port}`);
    }
  });

  test("hybrid vsock: the VMM picks the host's source port, so any port from the host is served", () => {
    // vhost-device-vsock 0.3 counts from 0; cloud-hypervisor allocates from 2^30.
    for (const port of [0, 5, 1023, 1024, 0x4000_0000, 0x7fff_ffff]) {
      assert.equal(refusePeer(host(port), { hybrid: true }), null, `port ${port}`);
    }
  });

  test("never a peer that is not the host (a guest-local process over vsock loopback), nor a non-vsock one", () => {
    for (const hybrid of [false, true]) {
      for (const cid of [1, 3, 1234]) {
        assert.match(refusePeer({ cid, port: 100 }, { hybrid }) ?? "accepted", /not the host \(cid 2\)/);
      }
      assert.match(refusePeer({ cid: undefined, port: undefined }, { hybrid }) ?? "accepted", /not an AF_VSOCK peer/);
    }
  });
});

describe("RefusalLog", () => {
  test("one line per interval naming the port, cid and source port; the next line counts what was skipped", () => {
    const lines: string[] = [];
    let now = 1_000;
    const refusals = new RefusalLog({ warn: (m) => lines.push(m) }, { intervalMs: 10_000, now: () => now });
    for (let i = 0; i < 50; i++) refusals.refused(1024, host(40_000 + i), "source port above 1023");
    assert.deepEqual(lines, ["vsock port 1024: refused cid 2 port 40000: source port above 1023"]);
    now += 10_000;
    refusals.refused(1025, { cid: 3, port: 7 }, "not the host (cid 2)");
    assert.equal(lines.length, 2);
    assert.equal(
      lines[1],
      "vsock port 1025: refused cid 3 port 7: not the host (cid 2) (49 more refused and not logged since the last line)",
    );
  });
});

/** A stand-in for an accepted VsockSocket with the peer address the kernel reported. */
function fakeConnection(peer: Peer): PeerSocket {
  return Object.assign(new PassThrough(), { remoteCid: peer.cid, remotePort: peer.port });
}

describe("acceptHostOnly", () => {
  test("serves the host's privileged connection; closes an unprivileged one at once with one log line", () => {
    const server = new EventEmitter();
    const lines: string[] = [];
    const served: PeerSocket[] = [];
    acceptHostOnly(
      server,
      { hybrid: false, port: 1024, refusals: new RefusalLog({ warn: (m) => lines.push(m) }) },
      (s) => served.push(s),
    );
    const daemon = fakeConnection(host(1023));
    const attacker = fakeConnection(host(50_123));
    server.emit("connection", daemon);
    server.emit("connection", attacker);
    assert.deepEqual(served, [daemon]);
    assert.equal(daemon.destroyed, false);
    assert.equal(attacker.destroyed, true);
    assert.deepEqual(lines, [
      "vsock port 1024: refused cid 2 port 50123: source port above 1023, so not the root daemon (booted without task.hybrid_vsock: vhost-vsock)",
    ]);
  });

  test("with task.hybrid_vsock the host's connection from any port is served", () => {
    const server = new EventEmitter();
    const served: PeerSocket[] = [];
    acceptHostOnly(server, { hybrid: true, port: 1025, refusals: new RefusalLog({ warn: () => undefined }) }, (s) =>
      served.push(s),
    );
    const c = fakeConnection(host(0x4000_0001));
    server.emit("connection", c);
    assert.deepEqual(served, [c]);
  });

  describe("on a real listener (the native server code over AF_UNIX, whose peers carry no vsock address)", () => {
    let dir: string;
    before(async () => {
      await nativeArtifacts();
      dir = await mkdtemp(path.join(os.tmpdir(), "peer-check-"));
    });
    after(() => rm(dir, { recursive: true, force: true }));

    test("a refused peer sees its connection closed and nothing is served", async () => {
      const sock = path.join(dir, "agent.sock");
      const server = vsockTestHooks.listenUnix(sock);
      const lines: string[] = [];
      let served = 0;
      acceptHostOnly(
        server,
        { hybrid: true, port: 1024, refusals: new RefusalLog({ warn: (m) => lines.push(m) }) },
        (s) => {
          // Closed here too, so a check that let it through fails below instead of hanging.
          served++;
          s.destroy();
        },
      );
      try {
        const client = await vsockTestHooks.connectUnix(sock, 2000);
        const closed = new Promise((resolve) => client.once("close", resolve));
        client.on("error", () => undefined);
        client.resume();
        await closed;
        assert.equal(served, 0);
        assert.deepEqual(lines, ["vsock port 1024: refused cid ? port ?: not an AF_VSOCK peer"]);
      } finally {
        server.close();
      }
    });
  });
});
