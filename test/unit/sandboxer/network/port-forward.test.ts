import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { PortForwards } from "../../../../runtime/agent/port-forward.ts";
import { StreamHub } from "../../../../runtime/agent/stream-hub.ts";
import { PORT_FORWARD_PREFIX } from "../../../../runtime/contract/port-forward.ts";
import { logger } from "../../../../runtime/log/log.ts";
import { Streaming } from "../../../../runtime/protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { PortForwarder } from "../../../../runtime/sandboxer/network/port-forward.ts";
import { openStream } from "../../../../runtime/streaming/open.ts";
import { TtrpcClient, TtrpcServer } from "../../../../runtime/ttrpc/index.ts";

// The host's forwarder in a real network namespace (as containerd's PortForward finds the pod's) and the guest's
// end behind a real ttrpc connection; the "guest" here is this process, so its localhost is the test's.
const NS = `kuasar-pf-${process.pid}`;
const nsPath = `/var/run/netns/${NS}`;
let dir: string;
let agentServer: TtrpcServer;
let agent: TtrpcClient;
let forwarder: PortForwarder;
let server: net.Server;
let serverPort: number;

/**
 * A client inside the pod's netns (python3, as containerd's dial would be a process there): sends, half-closes, reads.
 * Asynchronous: the forwarder and the "guest" run in this process.
 */
async function clientInNetns(port: number, send: string, repeat = 1): Promise<{ out: string; code: number | null }> {
  const script = `
import socket, sys
s = socket.create_connection(("127.0.0.1", ${port}), timeout=20)
got = b""
try:
    s.sendall(${JSON.stringify(send)}.encode() * ${repeat})
    s.shutdown(socket.SHUT_WR)
    while True:
        b = s.recv(65536)
        if not b: break
        got += b
except OSError as e:
    # Closed by a reset rather than EOF: say so, with what had arrived.
    sys.stdout.write(f"{len(got)} ! {type(e).__name__}")
    sys.exit(0)
sys.stdout.write(f"{len(got)} {got[:40].decode(errors='replace')}")
`;
  const child = spawn("ip", ["netns", "exec", NS, "python3", "-c", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((r) => child.once("exit", r));
  return { out: out.trim() || err.trim(), code };
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "port-forward-"));
  execFileSync("ip", ["netns", "add", NS]);
  execFileSync("ip", ["netns", "exec", NS, "ip", "link", "set", "lo", "up"]);
  // The pod's server, reached by the guest's end: upper-cases what it reads, answers after the client's EOF.
  server = net.createServer((s) => {
    let got = "";
    s.on("data", (d) => {
      got += d;
    });
    s.on("end", () => s.end(got.toUpperCase()));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  serverPort = (server.address() as net.AddressInfo).port;
  const forwards = new PortForwards();
  const hub = new StreamHub().route(PORT_FORWARD_PREFIX, (ch, id) => forwards.serve(ch, id));
  agentServer = new TtrpcServer().register(Streaming, {
    stream: (requests, out) => hub.serve(requests, (m) => out.send(m)),
  });
  const sock = path.join(dir, "agent.sock");
  const l = net.createServer();
  agentServer.serve(l);
  await new Promise<void>((r) => l.listen(sock, r));
  const conn = net.connect(sock);
  await new Promise((r) => conn.once("connect", r));
  agent = new TtrpcClient(conn);
  forwarder = await PortForwarder.start({ nsPath, openStream: (id) => openStream(agent, id), log: logger("test") });
});

after(async () => {
  await forwarder?.close();
  agent?.close();
  await agentServer?.close();
  server?.close();
  spawnSync("ip", ["netns", "del", NS]);
  await rm(dir, { recursive: true, force: true });
});

test("a connection to any localhost port in the pod's netns reaches that port in the guest, half-close included", async () => {
  assert.deepEqual(await clientInNetns(serverPort, "hello"), { out: "5 HELLO", code: 0 });
});

test("a MiB each way keeps to the streams' credit and arrives whole", async () => {
  const r = await clientInNetns(serverPort, "x", 1 << 20);
  assert.equal(r.code, 0, r.out);
  assert.equal(r.out, `${1 << 20} ${"X".repeat(40)}`);
});

test("a port nothing listens on in the guest closes the client's connection", async () => {
  const closed = net.createServer();
  // A port certainly free on this host (listen, note it, close).
  closed.listen(0, "127.0.0.1");
  const port = (closed.address() as net.AddressInfo | null)?.port ?? 1;
  closed.close();
  const r = await clientInNetns(port, "anyone?");
  // EOF, or a reset when the forwarder closes before the client's shutdown (its bytes unread): closed either way.
  assert.match(r.out, /^0( ! \w+)?$/, "no bytes, then the connection closed");
});

test("the daemon's own network namespace gets no listener and no NAT rule", () => {
  const rules = execFileSync("iptables", ["-t", "nat", "-S"], { encoding: "utf8" });
  assert.doesNotMatch(rules, /KUASAR-PORT-FORWARD/);
  const inNs = execFileSync("ip", ["netns", "exec", NS, "iptables", "-t", "nat", "-S"], { encoding: "utf8" });
  assert.match(inNs, new RegExp(`--to-ports ${forwarder.port}`));
});
