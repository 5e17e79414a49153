import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rmdir } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { MetricsSchema } from "../../runtime/protos/gen/containerd/cgroups/v2/metrics_pb.ts";
import { Task } from "../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { SandboxService } from "../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { dial } from "../../runtime/transport/address.ts";
import { TtrpcClient } from "../../runtime/ttrpc/index.ts";
import {
  busyboxBundle,
  cleanupDaemonDir,
  type Daemon,
  processesMatching,
  requireArtifacts,
  runContainer,
  startDaemon,
  writeConfig,
} from "../../testkit/daemon.ts";

// The daemon from source driving real QEMU (TCG here) guests built by the pipeline: the sandbox API as
// containerd uses it, a container through the per-sandbox task API, the debug console, kill -9 of the daemon
// (recovery) and of the VMM (Wait returns, everything cleaned).
let dir: string;
let config: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;

function connectController() {
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${daemon.sock}`));
}

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-sandboxer-"));
  config = path.join(dir, "config.toml");
  await writeConfig(config, 'kernel_params = "task.debug"\n');
  daemon = await startDaemon(dir, config);
  connectController();
});

after(async () => {
  closeController?.();
  await cleanupDaemonDir(daemon, dir);
  // The parents a kubelet would own: the test made them.
  for (const root of [
    "/sys/fs/cgroup",
    ...["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio"].map((c) => `/sys/fs/cgroup/${c}`),
  ]) {
    for (const d of [`kuasar-vm-test-${process.pid}/pod-d`, `kuasar-vm-test-${process.pid}`]) {
      await rmdir(path.join(root, d)).catch(() => undefined);
    }
  }
});

const options = (hostname: string) => ({
  typeUrl: "runtime.v1.PodSandboxConfig",
  value: toBinary(PodSandboxConfigSchema, create(PodSandboxConfigSchema, { hostname })),
});

test("a pod VM boots, serves containers through its task API, and stops cleanly", { timeout: 240_000 }, async () => {
  await controller.create({ sandboxId: "pod-a", options: options("pod-a-host") });
  const started = await controller.start({ sandboxId: "pod-a" });
  assert.equal(started.version, 3);
  assert.ok(started.pid > 0 && existsSync(`/proc/${started.pid}`), "Start reports the real QEMU pid");
  assert.match(started.address, /^ttrpc\+unix:\/\/.*\/pod-a\/task\.sock$/);
  const console = readFileSync(path.join(dir, "state/pod-a/console.log"), "utf8");
  assert.match(console, /vmm-task serving ttrpc on vsock port 1024/, "readiness on the serial console");
  assert.equal((await controller.status({ sandboxId: "pod-a" })).state, "SANDBOX_READY");

  const r = await runContainer(dir, started.address, "c1", "echo from $(hostname) on $(uname -r); exit 4");
  assert.equal(r.status, 4);
  assert.match(r.out, /^from \S+ on 6\.1\./);

  // Stats of a running container come from the guest's cgroup v2 as containerd's Metrics type.
  const conn = net.connect(started.address.replace(/^ttrpc\+unix:\/\//, ""));
  await new Promise((res) => conn.once("connect", res));
  const client = new TtrpcClient(conn);
  const task = client.service(Task);
  await task.create({ id: "sleeper", bundle: await busyboxBundle(dir, ["sleep", "300"]) });
  await task.start({ id: "sleeper" });
  const stats = await task.stats({ id: "sleeper" });
  assert.equal(stats.stats?.typeUrl, "io.containerd.cgroups.v2.Metrics");
  const m = fromBinary(MetricsSchema, stats.stats!.value);
  assert.ok(
    (m.pids?.current ?? 0n) >= 1n && (m.memory?.usage ?? 0n) > 0n,
    `pids ${m.pids?.current}, memory ${m.memory?.usage}`,
  );
  const gone = task.wait({ id: "sleeper" });
  await task.kill({ id: "sleeper", signal: 9 });
  assert.equal((await gone).exitStatus, 137);
  await task.delete({ id: "sleeper" });
  client.close();

  const waiting = controller.wait({ sandboxId: "pod-a" });
  await controller.stop({ sandboxId: "pod-a", timeoutSecs: 10 });
  await waiting;
  assert.equal((await controller.status({ sandboxId: "pod-a" })).state, "SANDBOX_NOTREADY");
  await controller.shutdown({ sandboxId: "pod-a" });
  assert.equal(existsSync(path.join(dir, "state/pod-a")), false);
  assert.deepEqual(processesMatching(path.join(dir, "state/pod-a")), [], "no QEMU or vhost-device-vsock left");
});

test("the VMM and its helpers run in the pod cgroup; the debug console answers over hybrid vsock", {
  timeout: 240_000,
}, async () => {
  const cgroupParent = `/kuasar-vm-test-${process.pid}/pod-d`;
  const podOptions = {
    typeUrl: "runtime.v1.PodSandboxConfig",
    value: toBinary(
      PodSandboxConfigSchema,
      create(PodSandboxConfigSchema, { linux: { cgroupParent, resources: { memoryLimitInBytes: 256n << 20n } } }),
    ),
  };
  await controller.create({ sandboxId: "pod-d", options: podOptions });
  const started = await controller.start({ sandboxId: "pod-d" });
  const vmProcs = processesMatching(path.join(dir, "state/pod-d"));
  assert.ok(vmProcs.includes(started.pid) && vmProcs.length >= 2, `QEMU and vhost-device-vsock: ${vmProcs}`);
  const cg = cgroupOf(started.pid);
  for (const pid of vmProcs) assert.equal(cgroupOf(pid), cg, `pid ${pid} is in the pod cgroup`);
  assert.equal(cg, `${cgroupParent}/kuasar-vmm-pod-d`);
  const qemuArgs = readFileSync(`/proc/${started.pid}/cmdline`, "utf8").split("\0");
  assert.match(qemuArgs[qemuArgs.indexOf("-m") + 1] ?? "", /^768M\b/, "512 MiB configured + the pod's 256 MiB limit");
  await controller.update({
    sandboxId: "pod-d",
    sandbox: {
      extensions: { resources: { typeUrl: "resources", value: Buffer.from('{"memory":{"limit":1073741824}}') } },
    },
    fields: ["extensions"],
  });
  const limitFile = podCgroupFile(cg, "memory.limit_in_bytes", "memory.max");
  assert.match(readFileSync(limitFile, "utf8"), /^1073741824\n?$/, "Update set the pod memory limit");

  const sock = await dial(`hvsock://${path.join(dir, "state/pod-d/task.vsock")}:1025`, { timeoutMs: 5000 });
  let screen = "";
  sock.on("data", (d) => {
    screen += d;
  });
  sock.write("grep MemTotal /proc/meminfo; echo console-$((6*7))\n");
  for (let i = 0; i < 200 && !screen.includes("console-42"); i++) await new Promise((r) => setTimeout(r, 100));
  sock.destroy();
  assert.match(screen, /console-42/);
  // The Update's 1 GiB pod limit grew the VM from 512 + 256 to 512 + 1024 MiB (a DIMM hot-plugged and onlined).
  const memTotalMiB = Number(/MemTotal:\s+(\d+) kB/.exec(screen)?.[1]) / 1024;
  assert.ok(memTotalMiB > 1400 && memTotalMiB <= 1536, `guest MemTotal ${memTotalMiB} MiB after Update`);
  await controller.shutdown({ sandboxId: "pod-d" });
  assert.equal(existsSync(path.dirname(limitFile)), false, "the pod cgroup is removed with the sandbox");
});

/** The memory cgroup of a process (v1), or its unified cgroup (v2). */
function cgroupOf(pid: number): string {
  const lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n");
  const line = lines.find((l) => /^\d+:memory:/.test(l)) ?? lines.find((l) => l.startsWith("0::"));
  return line!.split(":")[2]!;
}

/** A file of cgroup cg in the memory hierarchy: v1 name on a v1 host, v2 name on a v2 host. */
function podCgroupFile(cg: string, v1: string, v2: string): string {
  return existsSync("/sys/fs/cgroup/memory")
    ? path.join("/sys/fs/cgroup/memory", cg, v1)
    : path.join("/sys/fs/cgroup", cg, v2);
}

test("kill -9 of the daemon: a restarted daemon recovers the running pod", { timeout: 300_000 }, async () => {
  await controller.create({ sandboxId: "pod-r" });
  const started = await controller.start({ sandboxId: "pod-r" });
  closeController();
  daemon.proc.kill("SIGKILL");
  await new Promise((r) => daemon.proc.once("exit", r));
  assert.ok(existsSync(`/proc/${started.pid}`), "the VM outlives the daemon");

  daemon = await startDaemon(dir, config);
  connectController();
  assert.match(daemon.log(), /sandbox pod-r recovered/);
  const st = await controller.status({ sandboxId: "pod-r" });
  assert.equal(st.state, "SANDBOX_READY");
  assert.equal(st.pid, started.pid);
  const r = await runContainer(dir, st.address, "after-restart", "echo still here");
  assert.equal(r.out, "still here\n");

  // kill -9 of the VMM: Wait returns, the pod turns NOTREADY, its helpers are gone.
  const waiting = controller.wait({ sandboxId: "pod-r" });
  process.kill(started.pid, "SIGKILL");
  const exit = await waiting;
  assert.notEqual(exit.exitStatus, 0);
  assert.equal((await controller.status({ sandboxId: "pod-r" })).state, "SANDBOX_NOTREADY");
  await controller.shutdown({ sandboxId: "pod-r" });
  assert.deepEqual(processesMatching(path.join(dir, "state/pod-r")), []);
  await assert.rejects(
    controller.status({ sandboxId: "pod-r" }),
    (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
  );
});

test("the agent answers Check over hybrid vsock directly (Kuasar's address)", { timeout: 240_000 }, async () => {
  await controller.create({ sandboxId: "pod-c" });
  await controller.start({ sandboxId: "pod-c" });
  const client = new TtrpcClient(await dial(`hvsock://${path.join(dir, "state/pod-c/task.vsock")}:1024`));
  await client.service(SandboxService).check({});
  client.close();
  await controller.shutdown({ sandboxId: "pod-c" });
});
