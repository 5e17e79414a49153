import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { test } from "node:test";
import { serveDebugConsole, spawnDebugShell } from "../../../runtime/agent/console.ts";
import { DEBUG_CONSOLE_PORT } from "../../../runtime/contract/ports.ts";
import * as h from "./harness.ts";

test("debug shell: a pty with a controlling terminal, resize, ^C, exit status", { timeout: 30_000 }, async () => {
  await h.addonsReady();
  const sh = spawnDebugShell("/bin/sh");
  try {
    const out = h.collect(sh.stream);
    sh.resize(100, 30);
    sh.stream.write("echo $((6*7)); stty size\n");
    await h.until("the shell's answers", () => out.text().includes("42") && out.text().includes("30 100"));
    // ^C reaches the foreground job only through a controlling terminal.
    sh.stream.write("sleep 100; echo after-sleep\n");
    await new Promise((r) => setTimeout(r, 300));
    sh.stream.write("\x03");
    // ^C also flushes pending input, so type on only after it was handled.
    await h.until("the ^C echo", () => out.text().includes("^C"), 5000);
    await new Promise((r) => setTimeout(r, 200));
    sh.stream.write("echo interrupted\n");
    await h.until("the interrupted sleep", () => /\ninterrupted/.test(out.text()), 5000);
    assert.ok(!out.text().includes("\r\nafter-sleep"), "^C ended the whole command list");
    sh.stream.write("exit 3\n");
    assert.equal(await sh.exited, 3);
    await out.ended;
  } finally {
    sh.close();
  }
});

test("without task.debug nothing listens on the debug console port", () => {
  const ports: number[] = [];
  const warnings: string[] = [];
  const l = serveDebugConsole({ debug: false, debugShell: "/bin/sh" }, (port) => ports.push(port), {
    warn: (m) => warnings.push(m),
  });
  assert.equal(l, null);
  assert.deepEqual(ports, []);
  assert.deepEqual(warnings, []);
});

test("with task.debug each connection to port 1025 gets a shell, and the console says so", {
  timeout: 30_000,
}, async () => {
  await h.addonsReady();
  const dir = await mkdtemp(path.join(os.tmpdir(), "debug-console-"));
  const ports: number[] = [];
  const warnings: string[] = [];
  let serve: ((conn: Duplex) => void) | undefined;
  const l = serveDebugConsole(
    { debug: true, debugShell: "/bin/sh" },
    (port, s) => {
      ports.push(port);
      serve = s;
      return "listener";
    },
    { warn: (m) => warnings.push(m) },
  );
  assert.equal(l, "listener");
  assert.deepEqual(ports, [DEBUG_CONSOLE_PORT]);
  assert.equal(DEBUG_CONSOLE_PORT, 1025);
  assert.match(warnings.join("\n"), /task\.debug is set: a debug shell \(\/bin\/sh\) is served on vsock port 1025/);
  // The serve callback the listener gets: a connection's bytes reach a shell on a pty and back.
  const sock = path.join(dir, "console.sock");
  const server = net.createServer((conn) => serve!(conn));
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  try {
    const client = net.connect(sock);
    const out = h.collect(client);
    client.write("echo $((6*7)); exit\n");
    await h.until("the shell's answer", () => out.text().includes("42"));
    await out.ended;
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
