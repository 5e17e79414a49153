import assert from "node:assert/strict";
import { mkdtemp, rm, symlink } from "node:fs/promises";
import type { Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough, Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { serveDebugShell } from "../../../runtime/agent/console.ts";
import { DEBUG_CONSOLE_PORT } from "../../../runtime/contract/ports.ts";
import { commandLine, splitExecArgs } from "../../../runtime/ctl/args.ts";
import {
  dialConsole,
  ExecParser,
  execOverConsole,
  execScript,
  shellOverConsole,
  TIMED_OUT,
} from "../../../runtime/ctl/console.ts";
import type { AgentAddress } from "../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { HybridVsockListener } from "../../../runtime/transport/hybrid-vsock.ts";
import { processesMatching } from "../../../testkit/daemon.ts";
import { addonsReady } from "../agent/harness.ts";

const NONCE = "0123456789ab";
const M = "__kuasar_ctl_";

/** Feeds a console transcript in the given chunk sizes; returns what the parser made of it. */
function parseAll(transcript: string, chunk: number): { ready: number; out: string; exit?: number } {
  const p = new ExecParser(NONCE);
  let ready = 0;
  let out = "";
  let exit: number | undefined;
  const bytes = Buffer.from(transcript, "latin1");
  for (let i = 0; i < bytes.length; i += chunk) {
    const r = p.feed(bytes.subarray(i, i + chunk));
    if (r.ready) ready++;
    out += r.data.toString("latin1");
    if (r.exit !== undefined) exit = r.exit;
  }
  return { ready, out, ...(exit !== undefined ? { exit } : {}) };
}

describe("exec framing", () => {
  // What a pty shows: banner, the echoed setup line (markers split in two words), prompt, the markers themselves.
  const echoed = `/ # stty -echo -onlcr 2>/dev/null; printf '%s%s\\n' ${M} R${NONCE}\r\n`;

  test("output between the markers, the exit status after, in any chunking", () => {
    const body = "line one\nsecond\tline\n\x00\xff binary";
    const t = `${echoed}${M}R${NONCE}\n/ # ${M}S${NONCE}\n${body}${M}E${NONCE}:42\nafter`;
    for (const chunk of [1, 2, 3, 7, 64, t.length]) {
      assert.deepEqual(parseAll(t, chunk), { ready: 1, out: body, exit: 42 }, `chunks of ${chunk}`);
    }
  });

  test("CRLF from a tty without stty is turned back into LF; a lone CR is kept", () => {
    const t = `${echoed}${M}R${NONCE}\r\n${M}S${NONCE}\r\na\r\nb\rc\r\n${M}E${NONCE}:0\r\n`;
    for (const chunk of [1, 5, t.length]) {
      assert.deepEqual(parseAll(t, chunk), { ready: 1, out: "a\nb\rc\n", exit: 0 }, `chunks of ${chunk}`);
    }
  });

  test("text that only starts like the end marker is output", () => {
    const t = `${M}R${NONCE}\n${M}S${NONCE}\n${M}E${NONCE}X ${M}E${NONCE}:7\n`;
    assert.deepEqual(parseAll(t, 1), { ready: 1, out: `${M}E${NONCE}X `, exit: 7 });
  });

  test("no exit status until the end marker's line is complete", () => {
    const p = new ExecParser(NONCE);
    p.feed(Buffer.from(`${M}R${NONCE}\n${M}S${NONCE}\nout`));
    assert.equal(p.feed(Buffer.from(`${M}E${NONCE}:1`)).exit, undefined);
    assert.equal(p.feed(Buffer.from("3\n")).exit, 13);
  });

  test("the typed script never contains a marker; the command travels base64-encoded in short lines", () => {
    const command = `echo '${"x".repeat(5000)}'`;
    const { setup, run } = execScript(command, NONCE);
    for (const m of ["R", "S", "E"]) assert.ok(!`${setup}${run}`.includes(`${M}${m}${NONCE}`));
    assert.ok(run.split("\n").every((l) => l.length < 1024));
    const b64 = [...run.matchAll(/^__kx=(?:\$__kx)?([A-Za-z0-9+/=]*)$/gm)].map((m) => m[1]).join("");
    assert.equal(Buffer.from(b64, "base64").toString(), command);
  });

  test("several arguments are quoted as words, one is a command line; exec's options stop at the id", () => {
    assert.equal(commandLine(["echo $HOME; exit 3"]), "echo $HOME; exit 3");
    assert.equal(commandLine(["sh", "-c", "echo 'a b'; exit 3"]), `sh -c 'echo '\\''a b'\\''; exit 3'`);
    assert.deepEqual(splitExecArgs(["--timeout", "3", "abc", "--", "ls", "-l"]), {
      own: ["--timeout", "3"],
      id: "abc",
      command: ["ls", "-l"],
    });
    assert.deepEqual(splitExecArgs(["-d", "/x", "abc", "ls", "-l", "--", "y"]), {
      own: ["-d", "/x"],
      id: "abc",
      command: ["ls", "-l", "--", "y"],
    });
    assert.deepEqual(splitExecArgs(["--timeout=2"]), { own: ["--timeout=2"], command: [] });
  });
});

/**
 * The real thing on the host: vmm-task's debug shell (a shell on a pty) behind a hybrid vsock listener on port
 * 1025, as vhost-device-vsock exposes the guest's.
 */
describe("exec and shell against a debug shell on a pty", () => {
  let dir: string;
  let listener: HybridVsockListener;
  let agent: AgentAddress;
  const shells: { close(): void }[] = [];

  // As vmm-task serves it: one shell per connection, gone with the connection.
  function serve(conn: Socket): void {
    shells.push(serveDebugShell(conn, path.join(dir, "sh")));
  }

  before(async () => {
    await addonsReady();
    dir = await mkdtemp(path.join(os.tmpdir(), "ctl-console-"));
    // busybox's ash, which the guest runs, is busybox called as "sh".
    await symlink("/bin/busybox", path.join(dir, "sh"));
    listener = await HybridVsockListener.listen(path.join(dir, "task.vsock"));
    listener.handle(DEBUG_CONSOLE_PORT, serve);
    agent = { kind: "hvsock", udsPath: path.join(dir, "task.vsock"), port: 1024 };
  });

  after(async () => {
    for (const s of shells) s.close();
    await listener?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function run(command: string, timeoutMs?: number): Promise<{ out: string; code: number }> {
    let out = "";
    const sink = new Writable({
      write(chunk, _enc, cb) {
        out += chunk;
        cb();
      },
    });
    const sock = await dialConsole("pod", agent, 2000);
    const code = await execOverConsole(sock, command, sink, timeoutMs);
    return { out, code };
  }

  test("output and exit status pass through; stderr arrives merged", { timeout: 20_000 }, async () => {
    assert.deepEqual(await run("echo hello; echo oops >&2; exit 3"), { out: "hello\noops\n", code: 3 });
    assert.deepEqual(await run("printf 'no newline'"), { out: "no newline", code: 0 });
    assert.deepEqual(await run(commandLine(["sh", "-c", `echo "it's $((6*7))"; false`])), {
      out: "it's 42\n",
      code: 1,
    });
    assert.deepEqual(await run("for i in 1 2; do\n  echo line $i\ndone\ncat"), { out: "line 1\nline 2\n", code: 0 });
  });

  test("unbalanced syntax is the command's error, not a hung console", { timeout: 20_000 }, async () => {
    const r = await run("echo 'unterminated");
    assert.equal(r.code, 2);
    assert.match(r.out, /unterminated|syntax|quote/i);
  });

  test("--timeout: 124, and the command is interrupted", { timeout: 20_000 }, async () => {
    const r = await run("sleep 37.25; echo not-reached", 1000);
    assert.equal(r.code, TIMED_OUT);
    assert.ok(!r.out.includes("not-reached"));
    for (let i = 0; i < 50 && processesMatching("sleep 37.25").length > 0; i++)
      await new Promise((res) => setTimeout(res, 100));
    assert.deepEqual(processesMatching("sleep 37.25"), [], "the interrupted command is gone");
  });

  test("shell: piped input reaches the shell, its end logs out", { timeout: 20_000 }, async () => {
    const stdin = new PassThrough() as unknown as NodeJS.ReadStream;
    let screen = "";
    const stdout = new Writable({
      write(chunk, _enc, cb) {
        screen += chunk;
        cb();
      },
    });
    const sock = await dialConsole("pod", agent, 2000);
    const done = shellOverConsole(sock, stdin, stdout);
    (stdin as unknown as PassThrough).end("echo shell-$((6*7))\n");
    await done;
    assert.match(screen, /shell-42/);
  });

  test("a console nobody serves names the setting that turns it on", async () => {
    listener.unhandle(DEBUG_CONSOLE_PORT);
    try {
      await assert.rejects(dialConsole("pod-x", agent, 2000), /pod-x: nothing listens .*\[hypervisor\.task\]/);
    } finally {
      listener.handle(DEBUG_CONSOLE_PORT, serve);
    }
  });
});
