import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { procStartTime } from "../../../runtime/sandboxer/hypervisor/process.ts";
import { writeRecord } from "../../../runtime/sandboxer/store.ts";
import { repo, writeConfig } from "../../../testkit/daemon.ts";

// kuasar-vmm.service is Type=notify with WatchdogSec: the daemon runs here under a stand-in for systemd, a unix
// datagram socket in NOTIFY_SOCKET (Node has no datagram unix sockets, so a few lines of python3 hold it). The
// stand-in checks, the moment READY=1 arrives, that the API socket answers and that recovery has finished.

const PYTHON = "/usr/bin/python3";
const LISTENER = `
import json, os, socket, sys, time
notify, listen, record = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(notify)
print(json.dumps({"listening": True}), flush=True)
while True:
    msg = s.recv(4096).decode()
    out = {"t": time.time(), "msg": msg}
    if "READY=1" in msg.split("\\n"):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(listen)
            out["apiAnswers"] = True
        except OSError as e:
            out["apiAnswers"] = str(e)
        c.close()
        with open(record) as f:
            out["recordState"] = json.load(f)["state"]
    print(json.dumps(out), flush=True)
`;

interface Datagram {
  t: number;
  msg: string;
  apiAnswers?: true | string;
  recordState?: string;
}

let dir: string;
let vmm: ChildProcess;
let qmp: net.Server;
let listener: ChildProcess;
let daemon: ChildProcess;

before(async () => {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: apt-get install python3 (it stands in for systemd)`);
  dir = await mkdtemp(path.join(os.tmpdir(), "notify-"));
});

after(async () => {
  for (const p of [daemon, listener, vmm]) p?.kill("SIGKILL");
  qmp?.close();
  await rm(dir, { recursive: true, force: true });
});

/**
 * A sandbox the daemon must try to recover: its recorded "VMM" runs (a sleep), and its QMP socket accepts but
 * never greets, so recovery waits out its 3 s deadline before it gives up and cleans the sandbox up.
 */
async function staleSandbox(state: string): Promise<string> {
  const sandboxDir = path.join(state, "stale-pod");
  await mkdir(sandboxDir, { recursive: true });
  vmm = spawn("sleep", ["300"], { stdio: "ignore" });
  await new Promise((r) => vmm.once("spawn", r));
  const startTime = await procStartTime(vmm.pid!);
  const control = path.join(sandboxDir, "qmp.sock");
  qmp = net.createServer(() => undefined);
  await new Promise<void>((r) => qmp.listen(control, r));
  await writeRecord(sandboxDir, {
    id: "stale-pod",
    state: "running",
    createdAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    netnsPath: "",
    annotations: {},
    labels: {},
    pid: vmm.pid,
    taskAddress: `ttrpc+unix://${sandboxDir}/task.sock`,
    runtime: {
      vm: {
        kind: "qemu",
        id: "stale-pod",
        dir: sandboxDir,
        vmm: { pid: vmm.pid, startTime },
        helpers: [],
        consoleLog: path.join(sandboxDir, "console.log"),
        controlSocket: control,
        files: [],
        devices: {},
        extra: {},
      },
      agent: { kind: "hvsock", udsPath: path.join(sandboxDir, "task.vsock"), port: 1024 },
      nics: [],
    },
    nextStorage: 0,
  });
  return path.join(sandboxDir, "sandbox.json");
}

test("under a notify supervisor: READY=1 only once the socket answers and recovery is done, then WATCHDOG=1 pings", {
  timeout: 60_000,
}, async () => {
  const state = path.join(dir, "state");
  const record = await staleSandbox(state);
  const notify = path.join(dir, "notify.sock");
  const listen = path.join(dir, "vmm-sandboxer.sock");
  const config = path.join(dir, "config.toml");
  await writeConfig(config);

  const got: Datagram[] = [];
  listener = spawn(PYTHON, ["-c", LISTENER, notify, listen, record], { stdio: ["ignore", "pipe", "inherit"] });
  let pending = "";
  let listening!: () => void;
  const ready = new Promise<void>((r) => {
    listening = r;
  });
  listener.stdout!.on("data", (d) => {
    pending += d;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = JSON.parse(pending.slice(0, nl)) as Datagram & { listening?: boolean };
      pending = pending.slice(nl + 1);
      if (line.listening) listening();
      else got.push(line);
    }
  });
  await ready;

  const t0 = Date.now() / 1000;
  let log = "";
  daemon = spawn(
    process.execPath,
    ["--import", "tsx", path.join(repo, "runtime/sandboxer/main.ts"), "-c", config, "-d", state, "-l", listen],
    { env: { ...process.env, NOTIFY_SOCKET: notify, WATCHDOG_USEC: "1000000" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  daemon.stderr!.on("data", (d) => {
    log += d;
  });
  const until = async (what: string, ok: () => boolean, ms: number) => {
    for (const end = Date.now() + ms; !ok(); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > end) assert.fail(`no ${what} within ${ms} ms; datagrams ${JSON.stringify(got)}\n${log}`);
    }
  };
  const has = (m: string) => (d: Datagram) => d.msg.split("\n").includes(m);
  await until("READY=1", () => got.some(has("READY=1")), 30_000);
  const readyMsg = got.find(has("READY=1"))!;
  assert.equal(readyMsg.apiAnswers, true, "the API socket answers when READY=1 arrives");
  assert.equal(readyMsg.recordState, "stopped", "the unrecoverable sandbox was already cleaned up");
  assert.ok(readyMsg.t - t0 >= 2.5, `READY=1 came ${(readyMsg.t - t0).toFixed(2)} s after the start: before recovery?`);
  assert.ok(readyMsg.msg.includes(`MAINPID=${daemon.pid}`), readyMsg.msg);
  assert.match(log, /sandbox stale-pod cannot be recovered/);

  await until("two WATCHDOG=1 pings", () => got.filter(has("WATCHDOG=1")).length >= 2, 5_000);
  const pings = got.filter(has("WATCHDOG=1"));
  assert.ok(pings[0]!.t > readyMsg.t, "no watchdog ping before READY=1");

  daemon.kill("SIGTERM");
  const code = await new Promise((r) => daemon.once("exit", r));
  assert.equal(code, 0);
  await until("STOPPING=1", () => got.some(has("STOPPING=1")), 5_000);
});
