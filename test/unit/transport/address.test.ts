import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import type { Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, test } from "node:test";
import { dial, formatAddress, type ParsedAddress, parseAddress } from "../../../runtime/transport/address.ts";
import { HybridVsockListener } from "../../../runtime/transport/hybrid-vsock.ts";
import { listenUnix } from "../../../runtime/transport/unix.ts";
import { nativeArtifacts } from "../native/artifacts.ts";
import { repoModule, runAsNobody } from "./nobody.ts";

type ErrLike = { code: string; syscall: string; message: string };

const valid: Array<[string, ParsedAddress]> = [
  ["unix:///run/kuasar/task.sock", { transport: "unix", path: "/run/kuasar/task.sock", ttrpc: false }],
  ["ttrpc+unix:///abs.sock", { transport: "unix", path: "/abs.sock", ttrpc: true }],
  ["ttrpc+hvsock:///abs/uds:1024", { transport: "hvsock", path: "/abs/uds", port: 1024, ttrpc: true }],
  [
    "hvsock:///run/kuasar-vmm/sb1/task.vsock:1024",
    { transport: "hvsock", path: "/run/kuasar-vmm/sb1/task.vsock", port: 1024, ttrpc: false },
  ],
  ["ttrpc+vsock://3:1024", { transport: "vsock", cid: 3, port: 1024, ttrpc: true }],
  ["vsock://4294967295:0", { transport: "vsock", cid: 4294967295, port: 0, ttrpc: false }],
];

const invalid: Array<[string, RegExp]> = [
  ["", /missing ":\/\/"; expected unix:\/\/\/path/],
  ["/run/x.sock", /missing ":\/\/"/],
  ["tcp://1.2.3.4:5", /unsupported scheme "tcp"/],
  ["grpc+unix:///x.sock", /unsupported scheme "grpc\+unix"/],
  ["ttrpc+/abstract/name", /abstract unix socket, which is not supported/],
  ["unix://relative.sock", /socket path "relative.sock" must be absolute/],
  ["hvsock:///abs/uds", /missing :<port>/],
  ["hvsock:///abs/uds:", /port "" is not an integer/],
  ["ttrpc+hvsock:///abs/uds:10x", /port "10x" is not an integer/],
  ["hvsock://rel/uds:1024", /must be absolute/],
  ["vsock://3", /expected vsock:\/\/<cid>:<port>/],
  ["vsock://-1:1024", /cid "-1" is not an integer/],
  ["vsock://3:4294967296", /port "4294967296" is not an integer in 0..4294967295/],
];

describe("parseAddress", () => {
  for (const [text, expected] of valid) {
    test(`parses ${text}`, () => {
      assert.deepEqual(parseAddress(text), expected);
    });
  }
  for (const [text, why] of invalid) {
    test(`rejects ${JSON.stringify(text)}`, () => {
      assert.throws(
        () => parseAddress(text),
        (e: Error) => e.name === "AddressError" && e.message.includes(JSON.stringify(text)) && why.test(e.message),
      );
    });
  }
  test("the hybrid vsock path ends at the first ':'", () => {
    assert.throws(() => parseAddress("hvsock:///a:1:2"), /port "1:2" is not an integer/);
  });
});

describe("formatAddress", () => {
  test("round-trips every valid form", () => {
    for (const [text, parsed] of valid) assert.equal(formatAddress(parsed, { ttrpc: parsed.ttrpc }), text);
  });
  test("containerd form vs Kuasar form", () => {
    const a = { transport: "hvsock", path: "/d/sb/task.vsock", port: 1024 } as const;
    assert.equal(formatAddress(a, { ttrpc: true }), "ttrpc+hvsock:///d/sb/task.vsock:1024");
    assert.equal(formatAddress(a), "hvsock:///d/sb/task.vsock:1024");
  });
  test("refuses a hybrid vsock path containing ':' (it could not be parsed back)", () => {
    assert.throws(() => formatAddress({ transport: "hvsock", path: "/a:b", port: 1 }), /cannot contain ':'/);
  });
});

describe("dial", () => {
  let dir: string;
  before(async () => {
    await nativeArtifacts();
    dir = await mkdtemp(path.join(os.tmpdir(), "dial-test-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function roundTrip(s: Duplex): Promise<string> {
    s.end("ping");
    const chunks: Buffer[] = [];
    for await (const c of s) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString();
  }

  test("ttrpc+unix:// goes over a unix socket", async () => {
    const p = path.join(dir, "task.sock");
    const server = await listenUnix(p);
    server.on("connection", (s: Socket) => s.pipe(s));
    assert.equal(await roundTrip(await dial(`ttrpc+unix://${p}`)), "ping");
    server.close();
  });

  test("ttrpc+hvsock:// goes through the CONNECT handshake, retrying until the guest port is served", async () => {
    const p = path.join(dir, "task.vsock");
    const vmm = await HybridVsockListener.listen(p);
    setTimeout(() => vmm.handle(1024, (s) => s.pipe(s)), 150);
    const s = await dial(`ttrpc+hvsock://${p}:1024`, { retry: { deadlineMs: 3000, backoffMs: 20 } });
    assert.equal(await roundTrip(s), "ping");
    await vmm.close();
  });

  test("unix:// retries until the server socket appears", async () => {
    const p = path.join(dir, "late.sock");
    setTimeout(async () => {
      const server = await listenUnix(p);
      server.on("connection", (s: Socket) => {
        s.pipe(s);
        server.close();
      });
    }, 150);
    assert.equal(await roundTrip(await dial(`unix://${p}`, { retry: { deadlineMs: 3000, backoffMs: 20 } })), "ping");
  });

  test("vsock:// uses AF_VSOCK and reports an unreachable peer by cid and port", async () => {
    await assert.rejects(dial("vsock://1:50000", { timeoutMs: 200 }), /vsock cid 1 port 50000/);
  });

  test("vsock:// dials from a privileged source port: root gets to the connect, nobody is stopped at the bind", async () => {
    await assert.rejects(dial("vsock://1:50000", { timeoutMs: 200 }), (e: NodeJS.ErrnoException) => {
      assert.equal(e.syscall, "connect", e.message);
      return true;
    });
    const r = runAsNobody(`
      const { dial } = await import(${repoModule("runtime/transport/address.ts")});
      const err = await dial("vsock://1:50000", { timeoutMs: 200 }).then(() => null, (e) => ({ code: e.code, syscall: e.syscall, message: e.message }));
      console.log(JSON.stringify({ err }));
    `);
    assert.deepEqual(
      { code: (r.err as ErrLike).code, syscall: (r.err as ErrLike).syscall },
      { code: "EACCES", syscall: "bind" },
    );
    assert.match((r.err as ErrLike).message, /vsock cid 1 port 50000: binding a privileged vsock source port/);
  });
});
