import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { mkdir, open, readdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { logger } from "../../../../runtime/log/log.ts";
import { buildNative } from "../../../../runtime/native/build.ts";
import { DeleteResponseSchema, Task } from "../../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Status } from "../../../../runtime/protos/gen/containerd/types/task/task_pb.ts";
import { EventPublisher } from "../../../../runtime/sandboxer/events.ts";
import {
  mountShare,
  type ShareLayout,
  shareLayout,
  unmountAllUnder,
} from "../../../../runtime/sandboxer/storage/share.ts";
import { TaskProxy } from "../../../../runtime/sandboxer/task-proxy/proxy.ts";
import { ContainerRecords } from "../../../../runtime/sandboxer/task-proxy/records.ts";
import { TtrpcClient, TtrpcServer } from "../../../../runtime/ttrpc/index.ts";
import { addonsReady, busyboxRootfs, repo, requireTools, type Scratch, scratch } from "../../agent/harness.ts";

// containerd -> host task proxy -> the real vmm-task (on this host, under the C init) -> runc: everything but
// the VM. The "share" is a host directory that both sides see at the same path.
let s: Scratch;
let agentProc: ChildProcess;
let agent: TtrpcClient;
let events: EventPublisher;
let proxyServer: TtrpcServer;
let containerd: TtrpcClient;
let share: string;
let layout: ShareLayout;

async function waitForSocket(sock: string, ms: number): Promise<net.Socket> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const c = net.connect(sock);
        c.once("connect", () => resolve(c));
        c.once("error", reject);
      });
    } catch (e) {
      if (Date.now() > until)
        throw new Error(`vmm-task did not listen on ${sock} within ${ms} ms: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

before(async () => {
  await requireTools();
  await addonsReady();
  s = await scratch("proxy-agent");
  const { init } = await buildNative({ outDir: path.join(repo, "build", "native") });
  const sock = path.join(s.dir, "agent.sock");
  agentProc = spawn(
    init,
    [
      "--",
      process.execPath,
      "--import",
      "tsx",
      path.join(repo, "runtime/agent/main.ts"),
      "--listen",
      `unix:${sock}`,
      "--state-dir",
      path.join(s.dir, "agent-state"),
      "--runc-root",
      s.runcRoot,
      "--log-level",
      "debug",
    ],
    { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env } },
  );
  agent = new TtrpcClient(await waitForSocket(sock, 20_000));
  // The agent runs on this host, so its "guest" view of the share is the read-only shared/ itself.
  layout = { ...shareLayout(s.dir), guest: shareLayout(s.dir).shared, podFiles: path.join(s.dir, "pod-files") };
  share = layout.shared;
  await mountShare(layout);
  // What the guest's PID 1 does at boot: its own copies of the pod's files.
  await mkdir(layout.podFiles);
  for (const f of ["hostname", "hosts", "resolv.conf"])
    await writeFile(path.join(layout.podFiles, f), `${f} of the pod\n`);
  events = new EventPublisher(path.join(s.dir, "no-containerd.sock"), logger("test"));
  let n = 0;
  const proxy = new TaskProxy({
    sandboxId: "sb1",
    taskAddress: `ttrpc+unix://${path.join(s.dir, "task.sock")}`,
    records: new ContainerRecords(path.join(s.dir, "containers"), layout, logger("records")),
    share: layout,
    agent: () => agent,
    events,
    nextStorage: () => n++,
    log: logger("proxy"),
  });
  proxyServer = new TtrpcServer().register(Task, proxy.handlers());
  const l = net.createServer();
  proxyServer.serve(l);
  const taskSock = path.join(s.dir, "task.sock");
  await new Promise<void>((r) => l.listen(taskSock, r));
  containerd = new TtrpcClient(await waitForSocket(taskSock, 2000));
});

after(async () => {
  events?.close();
  containerd?.close();
  agent?.close();
  await proxyServer?.close();
  agentProc?.kill("SIGTERM");
  await new Promise((r) => agentProc?.once("exit", r));
  if (s) await unmountAllUnder(s.dir);
  await s?.cleanup();
});

async function hostBundle(id: string, args: string[], terminal = false): Promise<string> {
  const bundle = path.join(s.dir, "host-bundles", id);
  await mkdir(bundle, { recursive: true });
  const rootfs = await busyboxRootfs(path.join(s.dir, "image"));
  // What containerd writes: a full spec with host paths; rootfs comes separately as snapshot mounts.
  await writeFile(
    path.join(bundle, "config.json"),
    JSON.stringify({
      ociVersion: "1.0.2",
      process: { terminal, args, env: ["PATH=/bin", "TERM=xterm"], cwd: "/", user: { uid: 0, gid: 0 } },
      root: { path: rootfs },
      mounts: [
        { destination: "/proc", type: "proc", source: "proc" },
        { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"] },
        {
          destination: "/dev/pts",
          type: "devpts",
          source: "devpts",
          options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
      ],
      linux: {
        namespaces: [{ type: "pid" }, { type: "mount" }, { type: "network", path: "/proc/1/ns/net" }],
        cgroupsPath: `${s.cgroupParent}/${id}`,
      },
    }),
  );
  return bundle;
}

function fifo(name: string): string {
  const p = path.join(s.dir, name);
  execFileSync("mkfifo", [p]);
  return p;
}

function readAll(p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    createReadStream(p)
      .on("data", (d) => {
        out += d.toString();
      })
      .on("end", () => resolve(out))
      .on("error", reject);
  });
}

test("a container created through the proxy runs in the agent with runc; its output reaches the host FIFO", async () => {
  const task = containerd.service(Task);
  const stdout = fifo("c1-stdout");
  const output = readAll(stdout);
  const bundle = await hostBundle("c1", [
    "sh",
    "-c",
    "echo hello from a container; cat /etc/resolv.conf /etc/hosts; echo to stderr >&2; exit 3",
  ]);
  const created = await task.create(
    { id: "c1", bundle, stdout },
    { metadata: { "containerd-namespace-ttrpc": "k8s.io" } },
  );
  assert.ok(created.pid > 0);
  assert.equal((await task.state({ id: "c1" })).status, Status.CREATED);
  const waiting = task.wait({ id: "c1" });
  await task.start({ id: "c1" });
  assert.equal((await waiting).exitStatus, 3);
  assert.equal(
    await output,
    "hello from a container\nresolv.conf of the pod\nhosts of the pod\n",
    "the pod's files are bound into a container whose spec has none",
  );
  const st = await task.state({ id: "c1" });
  assert.equal(st.status, Status.STOPPED);
  assert.equal(st.bundle, bundle);
  await task.delete({ id: "c1" });
  assert.deepEqual(await readdir(share), []);
});

test("exec runs a second process in a running container with its own stdio", async () => {
  const task = containerd.service(Task);
  const bundle = await hostBundle("c2", ["sleep", "60"]);
  await task.create({ id: "c2", bundle });
  await task.start({ id: "c2" });
  const stdout = fifo("c2-exec-stdout");
  const output = readAll(stdout);
  const spec = {
    args: ["sh", "-c", "echo exec says hi; exit 7"],
    env: ["PATH=/bin"],
    cwd: "/",
    user: { uid: 0, gid: 0 },
  };
  await task.exec({
    id: "c2",
    execId: "e1",
    stdout,
    spec: {
      typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
      value: Buffer.from(JSON.stringify(spec)),
    },
  });
  const waiting = task.wait({ id: "c2", execId: "e1" });
  await task.start({ id: "c2", execId: "e1" });
  assert.equal((await waiting).exitStatus, 7);
  assert.equal(await output, "exec says hi\n");
  await task.delete({ id: "c2", execId: "e1" });
  const pids = await task.pids({ id: "c2" });
  assert.ok(pids.processes.length >= 1, "the container's init is alive");
  const done = task.wait({ id: "c2" });
  await task.kill({ id: "c2", signal: 9 });
  assert.equal((await done).exitStatus, 137);
  await task.delete({ id: "c2" });
  assert.equal(existsSync(path.join(share, "c2")), false);
});

test("a terminal container: keystrokes from the host stdin FIFO reach its pty, the screen comes back on stdout", async () => {
  const task = containerd.service(Task);
  const stdin = fifo("t1-stdin");
  const stdout = fifo("t1-stdout");
  const output = readAll(stdout);
  const bundle = await hostBundle("t1", ["sh"], true);
  await task.create({ id: "t1", bundle, stdin, stdout, terminal: true });
  const waiting = task.wait({ id: "t1" });
  await task.start({ id: "t1" });
  await task.resizePty({ id: "t1", width: 123, height: 45 });
  const keys = await open(stdin, "w");
  await keys.write("stty size; echo typed-$((40+2)); exit 5\n");
  assert.equal((await waiting).exitStatus, 5);
  await keys.close();
  const screen = await output;
  assert.match(screen, /45 123/);
  assert.match(screen, /typed-42/);
  await task.delete({ id: "t1" });
});

test("containerd-shim-kuasar-vmm-v1 delete removes a running container through the sandbox's task API", async () => {
  const task = containerd.service(Task);
  const bundle = await hostBundle("s1", ["sleep", "60"]);
  await task.create({ id: "s1", bundle });
  await task.start({ id: "s1" });
  // As containerd runs it after a restart: Go-style flags, the action last. Not spawnSync: the proxy it calls
  // lives in this process.
  const shim = (...args: string[]) =>
    new Promise<{ status: number | null; stdout: Buffer; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", path.join(repo, "runtime/shim/main.ts"), ...args]);
      const out: Buffer[] = [];
      let err = "";
      child.stdout.on("data", (d: Buffer) => out.push(d));
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      child.on("close", (status) => resolve({ status, stdout: Buffer.concat(out), stderr: err }));
    });
  const run = async (id: string, b: string) => {
    const r = await shim(
      "-namespace",
      "k8s.io",
      "-address",
      "/run/c.sock",
      "-id",
      id,
      "-bundle",
      b,
      "-debug",
      "delete",
    );
    assert.equal(r.status, 0, r.stderr);
    return fromBinary(DeleteResponseSchema, r.stdout);
  };
  const deleted = await run("s1", bundle);
  assert.equal(deleted.exitStatus, 137, "killed, then deleted");
  assert.ok(deleted.pid > 0);
  await assert.rejects(task.state({ id: "s1" }), /not found/);
  assert.equal(existsSync(path.join(share, "s1")), false, "its guest bundle is gone");
  // Nothing to delete (no link in the bundle, or a task the daemon no longer has): reported killed, exit 0.
  const gone = await run("s1", bundle);
  assert.equal(gone.exitStatus, 137);
  assert.equal(gone.pid, 0);
  assert.equal((await shim("-id", "s1", "-bundle", bundle, "start")).status, 2, "any other action: a usage error");
});

test("a restarted daemon's proxy stops the containers its predecessor created and frees their storage", async () => {
  const task = containerd.service(Task);
  const bundle = await hostBundle("o1", ["sleep", "60"]);
  await task.create({ id: "o1", bundle });
  await task.start({ id: "o1" });
  assert.ok(existsSync(path.join(s.dir, "containers/o1.json")), "the container's record is kept while it exists");
  const mounted = () => readFileSync("/proc/self/mountinfo", "utf8").includes(`${share}/`);
  assert.ok(mounted(), "its rootfs is mounted in the share");
  // A second proxy on the same state stands for the daemon after kill -9: it knows the container only by record.
  const successor = new TaskProxy({
    sandboxId: "sb1",
    taskAddress: "ttrpc+unix:///unused",
    records: new ContainerRecords(path.join(s.dir, "containers"), layout, logger("records")),
    share: layout,
    agent: () => agent,
    events,
    nextStorage: () => 99,
    log: logger("successor"),
  });
  assert.deepEqual(await successor.reapOrphans(), ["o1"]);
  await assert.rejects(agent.service(Task).state({ id: "o1" }), /not found/, "gone from the guest");
  assert.equal(mounted(), false, "its storage is unmounted");
  assert.deepEqual(await readdir(path.join(s.dir, "containers")), []);
  assert.deepEqual(await successor.reapOrphans(), [], "nothing left to reap");
  await assert.rejects(task.state({ id: "o1" }), /not found/);
});
