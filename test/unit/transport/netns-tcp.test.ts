import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";
import type { ErrnoError } from "../../../runtime/transport/errno-error.ts";
import { listenTcpInNetns, originalDestination, type TcpAddress } from "../../../runtime/transport/netns-tcp.ts";
import { nativeArtifacts } from "../native/artifacts.ts";

// A client inside the netns: sends its argument, half-closes, prints the reply.
const CLIENT = `
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(65536):
    reply += chunk
sys.stdout.write(reply.decode())
`;

const ns = `kuasar-nstcp-${process.pid}`;
const nsPath = `/var/run/netns/${ns}`;
let dir: string;

function inNetns(...argv: string[]) {
  return execa("ip", ["netns", "exec", ns, ...argv], { stdin: "ignore" });
}

async function dialInNetns(port: number, message: string): Promise<string> {
  return (await inNetns("python3", "-c", CLIENT, String(port), message)).stdout;
}

/** Echoes each connection and records where it was headed before NAT (or why that could not be read). */
function serve(server: net.Server): Array<TcpAddress | string> {
  const seen: Array<TcpAddress | string> = [];
  server.on("connection", (sock: net.Socket) => {
    try {
      seen.push(originalDestination(sock));
    } catch (e) {
      seen.push((e as Error).message);
    }
    sock.pipe(sock);
  });
  return seen;
}

/** The error listenTcpInNetns fails with; a listener it made instead is closed, so a failing run still ends. */
async function listenError(file: string, port?: number): Promise<ErrnoError> {
  try {
    const { server } = await listenTcpInNetns(file, port);
    server.close();
  } catch (e) {
    return e as ErrnoError;
  }
  assert.fail(`listenTcpInNetns(${JSON.stringify(file)}) succeeded`);
}

async function netnsOfEveryThread(): Promise<Set<string>> {
  const tids = await readdir("/proc/self/task");
  const links = await Promise.all(tids.map((t) => readlink(`/proc/self/task/${t}/ns/net`).catch(() => null)));
  return new Set(links.filter((l): l is string => l !== null));
}

before(async () => {
  assert.equal(
    process.getuid?.(),
    0,
    "these tests create network namespaces and join them: run them as root (sudo node --import tsx --test ...)",
  );
  await nativeArtifacts();
  await execa("ip", ["netns", "add", ns]);
  await inNetns("ip", "link", "set", "lo", "up");
  dir = await mkdtemp(path.join(os.tmpdir(), "netns-tcp-"));
});

after(async () => {
  await execa("ip", ["netns", "delete", ns], { reject: false });
  await rm(dir, { recursive: true, force: true });
});

describe("listenTcpInNetns", () => {
  test("listens on 127.0.0.1 inside the netns: a client there round-trips data", async () => {
    const { server, port } = await listenTcpInNetns(nsPath);
    try {
      assert.ok(port > 0, `the kernel should have picked a port, got ${port}`);
      assert.deepEqual(server.address(), { address: "127.0.0.1", family: "IPv4", port });
      const seen = serve(server);
      assert.equal(await dialInNetns(port, "hello from the pod netns"), "hello from the pod netns");
      assert.equal(seen.length, 1);
    } finally {
      server.close();
    }
  });

  test("the daemon's own netns has no such listener and none of its threads left it", async () => {
    const before = await netnsOfEveryThread();
    assert.equal(before.size, 1);
    const { server, port } = await listenTcpInNetns(nsPath);
    try {
      assert.deepEqual(await netnsOfEveryThread(), before);
      const client = net.connect({ host: "127.0.0.1", port });
      await assert.rejects(once(client, "connect"), { code: "ECONNREFUSED" }).finally(() => client.destroy());
    } finally {
      server.close();
    }
  });

  test("with an iptables REDIRECT, a client dialling 127.0.0.1:8080 reaches us and the original port is 8080", async () => {
    const { server, port } = await listenTcpInNetns(nsPath);
    const redirect = ["-o", "lo", "-d", "127.0.0.1", "-p", "tcp", "!", "--dport", String(port)];
    redirect.push("-j", "REDIRECT", "--to-ports", String(port));
    await inNetns("iptables", "-t", "nat", "-A", "OUTPUT", ...redirect);
    try {
      const seen = serve(server);
      assert.equal(await dialInNetns(8080, "to 8080"), "to 8080");
      assert.equal(await dialInNetns(9, "to 9"), "to 9");
      // Not redirected (the rule spares our own port): the original destination is the listener itself.
      assert.equal(await dialInNetns(port, "direct"), "direct");
      assert.deepEqual(seen, [
        { address: "127.0.0.1", port: 8080 },
        { address: "127.0.0.1", port: 9 },
        { address: "127.0.0.1", port },
      ]);
    } finally {
      await inNetns("iptables", "-t", "nat", "-D", "OUTPUT", ...redirect);
      server.close();
    }
  });

  test("a port already taken in the netns fails naming bind", async () => {
    const first = await listenTcpInNetns(nsPath);
    try {
      const err = await listenError(nsPath, first.port);
      assert.equal(err.syscall, "bind");
      assert.equal(err.code, "EADDRINUSE");
      assert.ok(err.message.includes(`127.0.0.1:${first.port} in the network namespace ${nsPath}`), err.message);
    } finally {
      first.server.close();
    }
  });

  test("a missing nsPath fails naming open and the path", async () => {
    const missing = path.join(dir, "no-such-netns");
    const err = await listenError(missing);
    assert.equal(err.syscall, "open");
    assert.equal(err.code, "ENOENT");
    assert.ok(err.message.includes(missing), err.message);
    assert.match(err.message, /open ENOENT/);
  });

  test("a path that is not a network namespace fails naming setns", async () => {
    const plain = path.join(dir, "plain-file");
    await writeFile(plain, "not a namespace");
    for (const file of ["/proc/self/ns/uts", plain]) {
      const err = await listenError(file);
      assert.equal(err.syscall, "setns", file);
      assert.equal(err.code, "EINVAL", file);
      assert.match(err.message, /setns EINVAL .*not a network namespace/);
      assert.ok(err.message.includes(file), err.message);
    }
  });

  test("attack: a FIFO as nsPath fails at setns instead of blocking the daemon in open", async () => {
    const fifo = path.join(dir, "fifo");
    await execa("mkfifo", [fifo]);
    const err = await listenError(fifo);
    assert.equal(err.syscall, "setns");
    assert.equal(err.code, "EINVAL");
  });

  test("attack: an nsPath with an embedded NUL is refused, not truncated to the part before it", async () => {
    const err = await listenError(`${nsPath}\0/../../../proc/1/ns/net`);
    assert.equal(err.syscall, "open");
    assert.equal(err.code, "EINVAL");
  });

  test("ports and backlogs out of range are RangeErrors", async () => {
    await assert.rejects(listenTcpInNetns(nsPath, 65536), RangeError);
    await assert.rejects(listenTcpInNetns(nsPath, -1), RangeError);
    await assert.rejects(listenTcpInNetns(nsPath, 0, 0), RangeError);
  });
});

describe("originalDestination", () => {
  test("a connection in a netns without NAT rules has none: ENOENT, saying why", async () => {
    // Conntrack runs in a netns only once something there needs it, so this one gets a netns of its own.
    const plain = `${ns}-plain`;
    await execa("ip", ["netns", "add", plain]);
    try {
      await execa("ip", ["netns", "exec", plain, "ip", "link", "set", "lo", "up"]);
      const { server, port } = await listenTcpInNetns(`/var/run/netns/${plain}`);
      try {
        const seen = serve(server);
        await execa("ip", ["netns", "exec", plain, "python3", "-c", CLIENT, String(port), "x"]);
        assert.equal(seen.length, 1);
        assert.match(String(seen[0]), /SO_ORIGINAL_DST.* from 127\.0\.0\.1:\d+: getsockopt ENOENT .*no NAT rule/);
      } finally {
        server.close();
      }
    } finally {
      await execa("ip", ["netns", "delete", plain]);
    }
  });

  test("a socket without an fd (destroyed) is a clear error", async () => {
    const { server, port } = await listenTcpInNetns(nsPath);
    try {
      const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
      const client = dialInNetns(port, "x").catch(() => "reset");
      const sock = await accepted;
      sock.destroy();
      assert.throws(() => originalDestination(sock), /has no file descriptor .*'connection' handler/);
      await client;
    } finally {
      server.close();
    }
  });
});
