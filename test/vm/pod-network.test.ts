import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { SandboxService } from "../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { dial } from "../../runtime/transport/address.ts";
import { TtrpcClient } from "../../runtime/ttrpc/index.ts";
import { cleanupDaemonDir, type Daemon, requireArtifacts, startDaemon, writeConfig } from "../../testkit/daemon.ts";

// A 2-vCPU pod VM (QEMU, TCG here) in a network namespace set up the way a CNI plugin leaves it, plus permanent
// neighbour entries: the guest NIC has one queue pair per vCPU, the neighbours are installed in the guest, and the
// pod's own sysctls win over Kuasar's defaults.
const ns = `kuasar-vmnet-${process.pid}`;
const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" }).toString();

let dir: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;

before(async () => {
  requireArtifacts();
  ip("netns", "add", ns);
  ip("link", "add", `kvm${process.pid}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
  ip("-n", ns, "link", "set", "eth0", "up");
  ip("-n", ns, "addr", "add", "10.88.10.2/24", "dev", "eth0");
  ip("-n", ns, "route", "add", "default", "via", "10.88.10.1");
  ip("-n", ns, "neigh", "add", "10.88.10.1", "lladdr", "02:00:0a:58:0a:01", "dev", "eth0", "nud", "permanent");
  ip("-n", ns, "neigh", "add", "fd00:88::1", "lladdr", "02:00:0a:58:0a:02", "dev", "eth0", "nud", "permanent");
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-net-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config, 'kernel_params = "task.debug"\n');
  // Two vCPUs for every pod of this daemon (writeConfig's default is 1).
  const text = (await readFile(config, "utf8")).replace("vcpus = 1\n", "vcpus = 2\n");
  assert.match(text, /vcpus = 2\n/);
  await writeFile(config, text);
  daemon = await startDaemon(dir, config);
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${daemon.sock}`));
});

after(async () => {
  closeController?.();
  await cleanupDaemonDir(daemon, dir);
  ip("netns", "del", ns);
});

test("2 vCPUs give the guest NIC 2 queue pairs; neighbours and the pod's sysctls reach the guest", {
  timeout: 240_000,
}, async (t) => {
  const config = create(PodSandboxConfigSchema, {
    hostname: "net-pod",
    linux: { sysctls: { "vm.overcommit_memory": "0" } },
  });
  await controller.create({
    sandboxId: "pod-net",
    netnsPath: `/var/run/netns/${ns}`,
    options: { typeUrl: "runtime.v1.PodSandboxConfig", value: toBinary(PodSandboxConfigSchema, config) },
  });
  const started = await controller.start({ sandboxId: "pod-net" });
  try {
    const cmdline = readFileSync(`/proc/${started.pid}/cmdline`, "utf8").split("\0");
    assert.ok(cmdline.includes("-smp") && cmdline[cmdline.indexOf("-smp") + 1] === "2", cmdline.join(" "));
    const netdev = cmdline.find((a) => a.startsWith("tap,id=net0,")) ?? "";
    assert.match(netdev, /ifname=tap_kua_\d+,.*queues=2/);
    assert.match(cmdline.find((a) => a.includes("netdev=net0")) ?? "", /mq=on,vectors=6/);

    const client = new TtrpcClient(await dial(`hvsock://${path.join(dir, "state/pod-net/task.vsock")}:1024`));
    try {
      const sh = async (command: string) =>
        (await client.service(SandboxService).execVMProcess({ command: `${command} 2>&1` })).out;
      const queues = (await sh("ls /sys/class/net/eth0/queues")).split(/\s+/).filter(Boolean).sort();
      t.diagnostic(`guest /sys/class/net/eth0/queues: ${queues.join(" ")}`);
      assert.deepEqual(queues, ["rx-0", "rx-1", "tx-0", "tx-1"]);
      assert.equal((await sh("nproc")).trim(), "2");

      const neigh = await sh("ip neigh show dev eth0");
      t.diagnostic(`guest neighbours: ${neigh.trim().replaceAll("\n", "; ")}`);
      assert.match(neigh, /^10\.88\.10\.1 (dev eth0 )?lladdr 02:00:0a:58:0a:01 .*PERMANENT$/m);
      assert.match(neigh, /^fd00:88::1 (dev eth0 )?lladdr 02:00:0a:58:0a:02 .*PERMANENT$/m);
      assert.match(await sh("ip -4 addr show dev eth0"), /inet 10\.88\.10\.2\/24/);
      const routes = await sh("ip -4 route show");
      assert.match(routes, /^default via 10\.88\.10\.1 dev eth0/m, routes);
      assert.match(routes, /^10\.88\.10\.0\/24 dev eth0 .*scope link/m, routes);
      assert.match(await sh("ip link show lo"), /[<,]UP[,>]/);

      // Kuasar's default (1) was written at boot; the pod's own value came later and wins.
      assert.equal(await sh("cat /proc/sys/vm/overcommit_memory"), "0\n");
    } finally {
      client.close();
    }
  } finally {
    await controller.shutdown({ sandboxId: "pod-net" });
  }
  const links = ip("-n", ns, "-j", "link", "show");
  assert.doesNotMatch(links, /tap_kua_/, "the tap is removed with the sandbox");
});
