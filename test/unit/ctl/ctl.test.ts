import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { appendFile, mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { formatDuration, formatTable, listSandboxes, rowOf } from "../../../runtime/ctl/list.ts";
import { printLog } from "../../../runtime/ctl/logs.ts";
import { readSandboxes, resolvePrefix } from "../../../runtime/ctl/sandboxes.ts";
import { addUnaryService, GrpcError } from "../../../runtime/grpc/service.ts";
import { Controller } from "../../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { controllerHandlers } from "../../../runtime/sandboxer/controller.ts";
import type { SandboxRecord } from "../../../runtime/sandboxer/sandbox/record.ts";
import { writeRecord } from "../../../runtime/sandboxer/store.ts";

const repo = path.resolve(import.meta.dirname, "../../..");
let tmp: string;
let state: string;

function record(id: string, over: Partial<SandboxRecord> = {}): SandboxRecord {
  return {
    id,
    state: "running",
    createdAt: "2025-01-01T00:00:00.000Z",
    startedAt: new Date(Date.now() - 3725_000).toISOString(),
    netnsPath: "",
    annotations: {},
    labels: {},
    pid: process.pid,
    taskAddress: `ttrpc+unix://${state}/${id}/task.sock`,
    runtime: { agent: { kind: "hvsock", udsPath: `${state}/${id}/task.vsock`, port: 1024 }, nics: [] },
    nextStorage: 0,
    ...over,
  };
}

/** Runs kuasar-ctl from source. */
function ctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", path.join(repo, "runtime/ctl/main.ts"), ...args],
      { cwd: repo },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "ctl-"));
  state = path.join(tmp, "state");
  for (const [id, over] of [
    ["a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", {}],
    ["a1b2ffff", { state: "stopped", exitStatus: 0, exitedAt: "2025-01-01T01:00:00.000Z" }],
    ["web-0", { pid: 2 ** 22 + 1 }],
  ] as const) {
    await mkdir(path.join(state, id), { recursive: true });
    await writeRecord(path.join(state, id), record(id, over as Partial<SandboxRecord>));
  }
  await mkdir(path.join(state, "broken"));
  await writeFile(path.join(state, "broken/sandbox.json"), "{ not json");
  await writeFile(path.join(state, "web-0/console.log"), "boot 1\nboot 2\nvmm-task serving ttrpc on vsock port 1024\n");
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("sandbox ids", () => {
  test("an exact id, a unique prefix; ambiguous and unknown prefixes name what to do", async () => {
    const all = await readSandboxes(state);
    assert.deepEqual(
      all.map((e) => e.id),
      ["a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "a1b2ffff", "broken", "web-0"],
    );
    assert.equal(resolvePrefix(all, "web", state).id, "web-0");
    assert.equal(resolvePrefix(all, "a1b2c", state).id.length, 64);
    assert.throws(
      () => resolvePrefix(all, "a1b2", state),
      /'a1b2' matches 2 sandboxes: a1b2c3d4.*, a1b2ffff; give more/,
    );
    assert.throws(() => resolvePrefix(all, "zz", state), new RegExp(`no sandbox id starts with 'zz' under ${state}`));
  });
});

describe("list", () => {
  test("rows from sandbox.json: state, pid and whether it still runs, uptime, address", async () => {
    const [full, stopped, broken, web] = await readSandboxes(state);
    // "now" 3725 s after the recorded start, however long the test took to get here.
    const now = Date.parse(full!.record!.startedAt!) + 3725_000;
    const r = rowOf(full!, "ready", now);
    assert.equal(r.state, "running");
    assert.equal(r.pid, process.pid);
    assert.equal(r.pidAlive, true);
    assert.equal(r.uptimeSeconds, 3725);
    assert.equal(r.agent, `hvsock://${state}/${full!.id}/task.vsock:1024`);
    assert.equal(rowOf(stopped!, "-", now).uptimeSeconds, null);
    assert.match(rowOf(broken!, "-", now).error!, /broken\/sandbox\.json: /);
    assert.equal(rowOf(web!, "-", now).pidAlive, false);
    const table = formatTable(
      [full, stopped, web].map((e) => rowOf(e!, "ready", now)),
      "daemon: x",
    ).split("\n");
    assert.equal(table[0], "daemon: x");
    assert.match(table[1]!, /^SANDBOX\s+STATE\s+DAEMON\s+VMM PID\s+UPTIME\s+ADDRESS$/);
    assert.match(table[2]!, new RegExp(`^a1b2c3d4e5f60  running  ready   ${process.pid}\\s+1h02m\\s+ttrpc\\+unix://`));
    assert.match(table[4]!, /^web-0 .* 4194305 \(gone\)/);
    assert.deepEqual([42, 423, 7500, 200_000].map(formatDuration), ["42s", "7m03s", "2h05m", "2d7h"]);
  });

  test("with the daemon up its Controller's view is shown; without it, the records alone", async () => {
    const sock = path.join(tmp, "daemon.sock");
    const server = new grpc.Server();
    // The daemon's real Controller over a manager stub that knows one sandbox.
    const known = record("web-0", { state: "running" });
    const manager = {
      status(id: string) {
        if (id !== "web-0") throw new GrpcError(grpc.status.NOT_FOUND, `sandbox ${id} not found`);
        return known;
      },
      dirOf: (id: string) => path.join(state, id),
    };
    addUnaryService(server, Controller, controllerHandlers(manager as never, "test"));
    await new Promise<void>((res, rej) =>
      server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
    );
    try {
      const up = await listSandboxes(state, sock);
      assert.equal(up.daemonLine, `daemon: serving on ${sock}`);
      assert.deepEqual(
        up.rows.map((r) => [r.id.slice(0, 8), r.daemon]),
        [
          ["a1b2c3d4", "unknown to the daemon"],
          ["a1b2ffff", "unknown to the daemon"],
          ["broken", "unknown to the daemon"],
          ["web-0", "ready"],
        ],
      );
    } finally {
      server.forceShutdown();
    }
    const down = await listSandboxes(state, sock);
    assert.match(down.daemonLine, /^daemon: not answering on .*daemon\.sock \(.*\); showing .*state only$/);
    assert.ok(down.rows.every((r) => r.daemon === "down"));
  });
});

/** Everything printLog writes, and each write on its own. */
async function printed(
  file: string,
  opts: Parameters<typeof printLog>[2],
): Promise<{ text: string; writes: Buffer[] }> {
  const out = new PassThrough();
  const writes: Buffer[] = [];
  out.on("data", (d: Buffer) => writes.push(d));
  await printLog(file, out, opts);
  return { text: Buffer.concat(writes).toString(), writes };
}

describe("logs", () => {
  test("the last n lines, read backwards in chunks across the rotated file and the current one", async () => {
    const dir = path.join(tmp, "tail");
    await mkdir(dir);
    const file = path.join(dir, "console.log");
    await writeFile(file, "a\nb\nc\n");
    const lines = async (n: number, chunkBytes = 3) =>
      (await printed(file, { follow: false, lines: n, chunkBytes })).text;
    assert.equal(await lines(2), "b\nc\n");
    assert.equal(await lines(9), "a\nb\nc\n");
    assert.equal(await lines(0), "");
    await writeFile(file, "a\nb");
    assert.equal(await lines(1), "b");
    // After a rotation the older lines are in console.log.1; lines longer than a chunk are found whole.
    await writeFile(`${file}.1`, "boot 1\nboot 2 is a longer line than one chunk\n");
    await writeFile(file, "boot 3\nboot 4\n");
    assert.equal(await lines(3, 4), "boot 2 is a longer line than one chunk\nboot 3\nboot 4\n");
    assert.equal(await lines(9, 4), "boot 1\nboot 2 is a longer line than one chunk\nboot 3\nboot 4\n");
    assert.equal(
      (await printed(file, { follow: false })).text,
      "boot 1\nboot 2 is a longer line than one chunk\nboot 3\nboot 4\n",
    );
    // Just rotated: the current file is empty and the lines come from the older one.
    await rename(file, `${file}.1`);
    await writeFile(file, "");
    assert.equal(await lines(1, 4), "boot 4\n");
  });

  test("a file many times the chunk size is printed in chunks, never read whole", async () => {
    const dir = path.join(tmp, "big");
    await mkdir(dir);
    const file = path.join(dir, "console.log");
    const body = Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join("");
    await writeFile(file, body);
    const all = await printed(file, { follow: false, raw: true, chunkBytes: 1024 });
    assert.equal(all.text, body);
    assert.ok(all.writes.length >= body.length / 1024, `${all.writes.length} writes`);
    assert.ok(
      all.writes.every((w) => w.length <= 1024),
      `a write of ${Math.max(...all.writes.map((w) => w.length))} bytes`,
    );
    const tail = await printed(file, { follow: false, lines: 2, raw: true, chunkBytes: 1024 });
    assert.equal(tail.text, "line 4998\nline 4999\n");
  });

  test("attack: guest escape sequences reach the terminal escaped; --raw prints the bytes", async () => {
    const dir = path.join(tmp, "escapes");
    await mkdir(dir);
    const file = path.join(dir, "console.log");
    // Clear the screen, set the window title, and overwrite the line with a fake prompt.
    const guest = "[    0.1] ok\r\n\x1b[2J\x1b]0;root@host\x07\ttab\rfake$ \u009b31m\n";
    await writeFile(file, guest);
    const shown = (await printed(file, { follow: false, chunkBytes: 5 })).text;
    assert.equal(shown, "[    0.1] ok\r\n\\x1b[2J\\x1b]0;root@host\\x07\ttab\\rfake$ \\u009b31m\n");
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    assert.ok(!/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/.test(shown));
    assert.equal((await printed(file, { follow: false, raw: true })).text, guest);
  });

  test("-f follows the log across rotations: the rest of the renamed file, then the new one", async () => {
    const dir = path.join(tmp, "rotate");
    await mkdir(dir);
    const file = path.join(dir, "console.log");
    await writeFile(file, "one\n");
    const out = new PassThrough();
    let text = "";
    out.on("data", (d) => {
      text += d;
    });
    const following = printLog(file, out, { follow: true, chunkBytes: 4 });
    const until = async (s: string) => {
      for (let i = 0; i < 100 && text !== s; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(text, s);
    };
    await until("one\n");
    // What the reader does: the last bytes go to the old file, which is renamed, and a new file starts.
    await appendFile(file, "two\n");
    await rename(file, `${file}.1`);
    await new Promise((r) => setTimeout(r, 400));
    await writeFile(file, "three\n");
    await until("one\ntwo\nthree\n");
    await appendFile(file, "four\n");
    await rename(file, `${file}.1`);
    await writeFile(file, "five\n");
    await until("one\ntwo\nthree\nfour\nfive\n");
    await rm(dir, { recursive: true });
    await following;
  });

  test("-f prints what is appended, starts over after truncation, ends when the sandbox is removed", async () => {
    const dir = path.join(tmp, "follow");
    await mkdir(dir);
    const file = path.join(dir, "console.log");
    await writeFile(file, "one\n");
    const out = new PassThrough();
    let text = "";
    out.on("data", (d) => {
      text += d;
    });
    const following = printLog(file, out, { follow: true });
    const until = async (s: string) => {
      for (let i = 0; i < 100 && !text.includes(s); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(text.includes(s), `waiting for ${JSON.stringify(s)} in ${JSON.stringify(text)}`);
    };
    await until("one\n");
    await appendFile(file, "two\n");
    await until("two\n");
    await writeFile(file, "3\n");
    await until("one\ntwo\n3\n");
    await rm(dir, { recursive: true });
    await following;
  });
});

describe("the kuasar-ctl command", () => {
  test("list, logs -n, ambiguous id, exec without a console, usage", { timeout: 60_000 }, async () => {
    const sock = path.join(tmp, "none.sock");
    const list = await ctl(["ps", "--dir", state, "--listen", sock]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^daemon: not answering/);
    assert.match(list.stdout, /\nweb-0 +running +down +4194305 \(gone\) +1h02m +ttrpc\+unix:\/\//);
    const json = JSON.parse((await ctl(["list", "--json", "-d", state, "-l", sock])).stdout);
    assert.equal(json.sandboxes.length, 4);

    const logs = await ctl(["logs", "-n", "1", "--dir", state, "we"]);
    assert.deepEqual([logs.code, logs.stdout], [0, "vmm-task serving ttrpc on vsock port 1024\n"]);
    const ambiguous = await ctl(["logs", "--dir", state, "a1"]);
    assert.equal(ambiguous.code, 1);
    assert.match(ambiguous.stderr, /'a1' matches 2 sandboxes/);

    // exec's own failures are 125, so they never pass for the command's status.
    const stopped = await ctl(["exec", "--dir", state, "a1b2f", "--", "true"]);
    assert.equal(stopped.code, 125);
    assert.match(stopped.stderr, /sandbox a1b2ffff is stopped, so its VM has no console/);
    const noVm = await ctl(["exec", "--dir", state, "web", "ls", "-l"]);
    assert.equal(noVm.code, 125);
    assert.match(noVm.stderr, /web-0: cannot reach the debug console at hvsock:\/\/.*task\.vsock:1025/);
    const usage = await ctl(["exec", "--dir", state, "web"]);
    assert.equal(usage.code, 125);
    assert.match(usage.stderr, /exec needs a sandbox id and a command/);
    assert.equal((await ctl(["frobnicate"])).code, 2);
    assert.match((await ctl(["logs", "--help"])).stdout, /^usage: kuasar-ctl/);
  });

  test("doctor and vmm-sandboxer check run the same checks", { timeout: 60_000 }, async () => {
    const config = path.join(tmp, "bad.toml");
    await writeFile(config, '[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\nvcpus = 0\n');
    const args = ["--json", "-c", config, "-d", state, "-l", path.join(tmp, "none.sock")];
    const doctor = await ctl(["doctor", ...args]);
    const check = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(
        process.execPath,
        ["--import", "tsx", path.join(repo, "runtime/sandboxer/main.ts"), "check", ...args],
        (err, stdout) => resolve({ code: err ? Number(err.code) : 0, stdout }),
      ),
    );
    assert.equal(doctor.code, 1);
    assert.equal(check.code, 1);
    const [a, b] = [JSON.parse(doctor.stdout), JSON.parse(check.stdout)];
    const ids = (r: { checks: { id: string }[] }) => r.checks.map((c) => c.id);
    assert.deepEqual(ids(a), ids(b));
    assert.equal(a.checks[0].status, "fail");
    assert.match(a.checks[0].verdict, /hypervisor\.vcpus: out of range/);
    assert.equal(a.checks.find((c: { id: string }) => c.id === "kvm").status, "skip");
    assert.equal((await ctl(["doctor", "--frob"])).code, 2);
  });
});
