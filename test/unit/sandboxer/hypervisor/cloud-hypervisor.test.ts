import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { ClhApi, ClhApiError } from "../../../../runtime/sandboxer/hypervisor/cloud-hypervisor/api.ts";
import { clhPlan } from "../../../../runtime/sandboxer/hypervisor/cloud-hypervisor/plan.ts";
import { procStartTime } from "../../../../runtime/sandboxer/hypervisor/process.ts";
import { createHypervisor, recoverHypervisor } from "../../../../runtime/sandboxer/hypervisor/registry.ts";
import type { HypervisorState } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { DIR, env, sandbox } from "../fixtures/driver-env.ts";
import { FakeClhApi } from "../fixtures/fake-clh-api.ts";
import { gone, standIn } from "../fixtures/procs.ts";

/** Polls until check() holds, for what a VM does in the background. */
async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await check()); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(await check());
}

const clh = (toml = "") => parseConfig(`[hypervisor]\ntype = "cloud-hypervisor"\n${toml}`, "test.toml").config;
let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "kuasar-clh-"));
});
after(() => rm(tmp, { recursive: true, force: true }));

describe("cloud-hypervisor command lines", () => {
  test("defaults: image as pmem with discarded writes, virtio-fs, hybrid vsock on task.vsock, serial on console.sock", () => {
    const plan = clhPlan(clh(), sandbox, "rust", undefined, { partitioned: true, fsdax: true });
    assert.equal(plan.vmm.path, "/usr/local/bin/cloud-hypervisor");
    assert.deepEqual(plan.vmm.args, [
      ...["--api-socket", `${DIR}/api.sock`],
      ...["--cpus", "boot=1"],
      ...["--memory", "size=1024M,shared=on"],
      ...["--kernel", "/var/lib/kuasar/vmlinux.bin"],
      "--cmdline",
      "console=ttyS0 root=/dev/pmem0p1 rootflags=dax ro rootfstype=ext4 panic=1 no_timer_check task.sharefs_type=virtiofs task.log_level=info task.hybrid_vsock",
      ...["--pmem", "file=/var/lib/kuasar/kuasar.img,discard_writes=on"],
      ...["--rng", "src=/dev/urandom"],
      ...["--vsock", `cid=3,socket=${DIR}/task.vsock`],
      ...["--fs", `tag=kuasar,socket=${DIR}/virtiofs.sock`],
      ...["--serial", `socket=${DIR}/console.sock`, "--console", "off"],
    ]);
    assert.deepEqual(
      plan.helpers.map((h) => [h.path, ...h.args]),
      [
        [
          "/usr/local/bin/virtiofsd",
          ...["--socket-path", `${DIR}/virtiofs.sock`, "--shared-dir", `${DIR}/shared`, "--cache", "never"],
          ...["--log-level", "info", "--announce-submounts", "--thread-pool-size", "4", "--syslog"],
        ],
      ],
    );
    // Hybrid vsock: the daemon dials task.vsock and writes "CONNECT 1024\n".
    assert.deepEqual(plan.agentAddress, { kind: "hvsock", udsPath: `${DIR}/task.vsock`, port: 1024 });
    assert.equal(plan.controlSocket, `${DIR}/api.sock`);
    // The serial console is a socket cloud-hypervisor listens on; the daemon reads it into console.log.
    assert.equal(plan.consoleSocket, `${DIR}/console.sock`);
    assert.equal(plan.consoleLog, `${DIR}/console.log`);
    assert.deepEqual(plan.files, [
      `${DIR}/api.sock`,
      `${DIR}/task.vsock`,
      `${DIR}/virtiofs.sock`,
      `${DIR}/console.sock`,
    ]);
  });

  test("initrd, hugepages, prefault, pod resources, taps by fd and by name, verbose log", () => {
    const plan = clhPlan(
      clh(
        'image_path = ""\ninitrd_path = "/var/lib/kuasar/kuasar.initrd"\nhugepages = true\nenable_mem_prealloc = true\n' +
          'entropy_source = ""\ndebug = true\n[hypervisor.virtiofsd]\nsyslog = false\ncache = "auto"\nthread_pool_size = 0\n' +
          "[hypervisor.task]\ndebug = true\nenable_tracing = true\n",
      ),
      {
        ...sandbox,
        vcpus: 2,
        memoryMiB: 2048,
        netnsPath: "/var/run/netns/cni-9",
        netDevices: [
          { tapName: "tap_kua_2", fds: [21, 22], mac: "02:42:ac:11:00:02", mtu: 1500 },
          { tapName: "tap_kua_5", mac: "02:42:ac:11:00:05", mtu: 1500 },
        ],
      },
      "c",
    );
    assert.deepEqual(plan.vmm.args, [
      ...["--api-socket", `${DIR}/api.sock`],
      ...["--cpus", "boot=2"],
      ...["--memory", "size=2048M,shared=on,hugepages=on,prefault=on"],
      ...["--kernel", "/var/lib/kuasar/vmlinux.bin"],
      "--cmdline",
      "console=ttyS0 rdinit=/sbin/init panic=1 no_timer_check task.sharefs_type=virtiofs task.log_level=info task.hybrid_vsock task.debug task.enable_tracing",
      ...["--initramfs", "/var/lib/kuasar/kuasar.initrd"],
      ...["--vsock", `cid=3,socket=${DIR}/task.vsock`],
      ...["--fs", `tag=kuasar,socket=${DIR}/virtiofs.sock`],
      ...["--serial", `socket=${DIR}/console.sock`, "--console", "off"],
      ...["--net", "fd=[3,4],mac=02:42:ac:11:00:02,num_queues=4"],
      ...["--net", "tap=tap_kua_5,mac=02:42:ac:11:00:05"],
      "-vv",
    ]);
    assert.deepEqual(plan.vmm.fds, [21, 22]);
    assert.equal(plan.vmm.netnsPath, "/var/run/netns/cni-9");
    // QEMU's C virtiofsd spells the same settings differently.
    assert.deepEqual(plan.helpers[0]?.args, [
      `--socket-path=${DIR}/virtiofs.sock`,
      ...["-o", `source=${DIR}/shared`, "-o", "cache=auto", "-o", "log_level=info", "-o", "announce_submounts"],
    ]);
  });

  test("task.hybrid_vsock is always on the kernel command line: cloud-hypervisor's vsock is hybrid", () => {
    for (const toml of ["", 'image_path = ""\ninitrd_path = "/var/lib/kuasar/kuasar.initrd"\n']) {
      const plan = clhPlan(clh(toml), sandbox, "rust");
      const words = plan.vmm.args[plan.vmm.args.indexOf("--cmdline") + 1]!.split(" ");
      assert.deepEqual(
        words.filter((w) => w.startsWith("task.hybrid_vsock")),
        ["task.hybrid_vsock"],
      );
      assert.equal(plan.agentAddress.kind, "hvsock");
    }
  });
});

describe("cloud-hypervisor API client against a server that enforces the openapi shapes", () => {
  let api: FakeClhApi;
  beforeEach(async () => {
    api = new FakeClhApi(path.join(tmp, `api-${Math.random().toString(36).slice(2)}.sock`));
    await api.listen();
  });
  afterEach(() => api.close());

  test("each call has its method, path and body", async () => {
    const c = new ClhApi(api.path);
    await c.waitReady(1000, () => true);
    assert.equal((await c.vmInfo()).state, "Running");
    assert.deepEqual(await c.addDisk({ path: "/dev/dm-3", readonly: true, direct: true, id: "d1", serial: "d1" }), {
      id: "d1",
      bdf: "0000:00:06.0",
    });
    await c.removeDevice("d1");
    await c.powerButton();
    await c.shutdownVm();
    await c.shutdownVmm();
    assert.deepEqual(api.calls, [
      { method: "GET", endpoint: "vmm.ping" },
      { method: "GET", endpoint: "vm.info" },
      {
        method: "PUT",
        endpoint: "vm.add-disk",
        body: { path: "/dev/dm-3", readonly: true, direct: true, id: "d1", serial: "d1" },
      },
      { method: "PUT", endpoint: "vm.remove-device", body: { id: "d1" } },
      { method: "PUT", endpoint: "vm.power-button" },
      { method: "PUT", endpoint: "vm.shutdown" },
      { method: "PUT", endpoint: "vmm.shutdown" },
    ]);
  });

  test("a refusal carries the HTTP status and the VMM's message", async () => {
    const c = new ClhApi(api.path);
    api.on("vm.shutdown", () => ({ status: 405, body: "VM is not running" }));
    const err = await c.shutdownVm().catch((e: unknown) => e);
    assert.ok(err instanceof ClhApiError);
    assert.equal(err.status, 405);
    assert.match(err.message, /cloud-hypervisor PUT vm\.shutdown: HTTP 405: VM is not running/);
    // The fake refuses what the spec does not define, so a malformed request cannot pass unnoticed.
    await assert.rejects(
      c.call("PUT", "vm.add-disk", { path: "/x", readonly: "yes" }),
      /HTTP 400: DiskConfig\.readonly: expected boolean/,
    );
    await assert.rejects(
      c.call("PUT", "vm.add-disk", { path: "/x", cache: "none" }),
      /HTTP 400: DiskConfig: unknown field cache/,
    );
    await assert.rejects(c.call("GET", "vm.shutdown"), /HTTP 405/);
  });

  test("waitReady gives up with the socket path", async () => {
    await assert.rejects(
      new ClhApi(path.join(tmp, "none.sock")).waitReady(200, () => true),
      /cloud-hypervisor API .*none\.sock: .*ENOENT/,
    );
  });
});

describe("cloud-hypervisor driver", () => {
  test("recovered VM: status, hot-plug, removal, stop through the API", async () => {
    const sbDir = await mkdtemp(path.join(tmp, "sb-"));
    const api = new FakeClhApi(path.join(sbDir, "api.sock"));
    await api.listen();
    const vmm = await standIn();
    const helper = await standIn();
    api.on("vmm.shutdown", () => {
      setTimeout(() => vmm.child.kill("SIGTERM"), 20);
      return { status: 204 };
    });
    const state: HypervisorState = {
      kind: "cloud-hypervisor",
      id: "sb1",
      dir: sbDir,
      vmm: vmm.ref,
      helpers: [{ name: "virtiofsd", ...helper.ref }],
      agentAddress: { kind: "hvsock", udsPath: path.join(sbDir, "task.vsock"), port: 1024 },
      consoleLog: path.join(sbDir, "console.log"),
      controlSocket: api.path,
      files: [],
      devices: {},
      extra: { vcpus: 1, maxVcpus: 2, memoryMiB: 512, maxMemMiB: 4096 },
    };
    try {
      const vm = await recoverHypervisor(state, env);
      assert.deepEqual(await vm.status(), { state: "running", detail: "Running" });
      assert.deepEqual(await vm.hotplugDisk({ id: "vol1", path: "/dev/dm-7", readOnly: false }), {
        id: "vol1",
        serial: "vol1",
      });
      assert.deepEqual(vm.persistState().devices, { vol1: { bus: "0000:00:06.0" } });
      await vm.removeDevice("vol1");
      // Resizing: vm.info's config is the size now; vm.resize asks for the whole new size, RAM in 128 MiB steps.
      const mib = 1048576;
      const info = {
        state: "Running",
        config: { cpus: { boot_vcpus: 1, max_vcpus: 2 }, memory: { size: 512 * mib, hotplugged_size: 0 } },
      };
      api.on("vm.info", () => ({ status: 200, body: info }));
      assert.deepEqual(await vm.size(), { vcpus: 1, memoryMiB: 512, maxVcpus: 2, maxMemoryMiB: 4096 });
      await vm.grow({ vcpus: 2, memoryMiB: 700 });
      assert.deepEqual(api.calls.at(-1)?.body, { desired_vcpus: 2, desired_ram: 768 * mib });
      await assert.rejects(
        vm.grow({ vcpus: 3, memoryMiB: 512 }),
        /3 vCPUs asked, but the VM was started with at most 2/,
      );
      await assert.rejects(
        vm.grow({ vcpus: 1, memoryMiB: 5000 }),
        /5120 MiB asked, but the VM was started able to reach 4096 MiB/,
      );
      api.on("vm.info", () => ({ status: 200, body: { state: api.state, config: {} } }));
      api.state = "Shutdown";
      assert.deepEqual(await vm.status(), { state: "shutdown", detail: "Shutdown" });
      // The power button is pressed but this guest ignores it: vm.shutdown and vmm.shutdown follow.
      const exit = await vm.stop(200);
      assert.equal(exit.exitStatus, 0);
      assert.deepEqual(
        api.calls.map((c) => c.endpoint),
        [
          "vmm.ping",
          "vm.info",
          "vm.add-disk",
          "vm.remove-device",
          "vm.info",
          "vm.info",
          "vm.resize",
          "vm.info",
          "vm.info",
          "vm.info",
          "vm.power-button",
          "vm.shutdown",
          "vmm.shutdown",
        ],
      );
      await gone(helper.child);
    } finally {
      vmm.child.kill("SIGKILL");
      helper.child.kill("SIGKILL");
      await api.close();
    }
  });

  test("a recovered VM's console is read again from its socket; detach lets go of it for the next daemon", async () => {
    const sbDir = await mkdtemp(path.join(tmp, "sb-console-"));
    const api = new FakeClhApi(path.join(sbDir, "api.sock"));
    await api.listen();
    const vmm = await standIn();
    const consoleSocket = path.join(sbDir, "console.sock");
    const readers: net.Socket[] = [];
    const guest = net.createServer((c) => {
      readers.push(c);
      c.on("error", () => {});
      c.write(`line for reader ${readers.length}\n`);
    });
    await new Promise<void>((r) => guest.listen(consoleSocket, r));
    const consoleLog = path.join(sbDir, "console.log");
    await writeFile(consoleLog, "before the restart\n");
    const state: HypervisorState = {
      kind: "cloud-hypervisor",
      id: "sb1",
      dir: sbDir,
      vmm: vmm.ref,
      helpers: [],
      consoleLog,
      console: { socket: consoleSocket, maxBytes: 1 << 20 },
      controlSocket: api.path,
      files: [],
      devices: {},
      extra: {},
    };
    try {
      const first = await recoverHypervisor(state, env);
      await until(async () => (await readFile(consoleLog, "utf8")).endsWith("line for reader 1\n"));
      first.detach();
      await until(async () => readers[0]!.closed);
      const second = await recoverHypervisor(first.persistState(), env);
      await until(async () => (await readFile(consoleLog, "utf8")).endsWith("line for reader 2\n"));
      assert.equal(await readFile(consoleLog, "utf8"), "before the restart\nline for reader 1\nline for reader 2\n");
      second.detach();
    } finally {
      vmm.child.kill("SIGKILL");
      guest.close();
      for (const c of readers) c.destroy();
      await api.close();
    }
  });

  test("start runs virtiofsd first, then the VMM detached, and reports its real pid; stop cleans up", async () => {
    const fake = path.join(import.meta.dirname, "../fixtures/fake-vmm.mjs");
    const sbDir = path.join(tmp, "started");
    await mkdir(path.join(sbDir, "shared"), { recursive: true });
    const kernel = path.join(tmp, "vmlinux.bin");
    await writeFile(kernel, "");
    const config = clh(
      `path = "${fake}"\nkernel_path = "${kernel}"\nimage_path = "${kernel}"\n[hypervisor.virtiofsd]\npath = "${fake}"\nsyslog = false\n`,
    );
    const vm = createHypervisor(
      config,
      { id: "sb2", dir: sbDir, shareDir: path.join(sbDir, "shared"), netDevices: [] },
      env,
    );
    const started = await vm.start();
    assert.equal(await readFile(path.join(sbDir, "vmm.pid"), "utf8"), `${started.pid}\n`);
    assert.notEqual(await procStartTime(started.pid), undefined);
    assert.deepEqual(started.agentAddress, { kind: "hvsock", udsPath: path.join(sbDir, "task.vsock"), port: 1024 });
    // The daemon reads the guest's console from the VMM's socket into console.log.
    await until(async () => (await readFile(started.consoleLog, "utf8").catch(() => "")) === "fake guest booted\n");
    const state = vm.persistState();
    assert.deepEqual(state.console, { socket: path.join(sbDir, "console.sock"), maxBytes: 4 * 1024 * 1024 });
    assert.deepEqual(
      state.helpers.map((h) => h.name),
      ["virtiofsd"],
    );
    assert.match(await readFile(path.join(sbDir, "vmm.log"), "utf8"), /argv: \["--api-socket",/);
    const exit = await vm.stop(5000);
    assert.equal(exit.exitStatus, 0);
    assert.equal(await procStartTime(started.pid), undefined);
    assert.equal(await procStartTime(state.helpers[0]!.pid), undefined);
    for (const f of ["api.sock", "virtiofs.sock", "vmm.pid", "console.sock"]) {
      assert.equal(existsSync(path.join(sbDir, f)), false, f);
    }
    // What the guest printed last, as its VMM went, was saved before the reader stopped.
    assert.equal(await readFile(started.consoleLog, "utf8"), "fake guest booted\nfake guest powered off\n");
  });

  test("a VMM that fails to boot: the error names the sandbox and quotes its log; helpers are stopped", async () => {
    const fake = path.join(import.meta.dirname, "../fixtures/fake-vmm.mjs");
    const sbDir = path.join(tmp, "broken");
    await mkdir(path.join(sbDir, "shared"), { recursive: true });
    const kernel = path.join(tmp, "broken-vmlinux.bin");
    await writeFile(kernel, "");
    const config = clh(
      `path = "${fake}"\nkernel_path = "${kernel}"\nimage_path = "${kernel}"\n[hypervisor.virtiofsd]\npath = "${fake}"\n`,
    );
    const vm = createHypervisor(
      config,
      { id: "sb3", dir: sbDir, shareDir: path.join(sbDir, "shared"), netDevices: [] },
      env,
    );
    await assert.rejects(
      vm.start(),
      /sandbox sb3: cloud-hypervisor exited with status 1 while starting; .*vmm\.log:\n(.|\n)*Error booting VM: VmBoot\(KernelLoad/,
    );
    assert.deepEqual(vm.persistState().helpers, []);
    assert.equal(existsSync(path.join(sbDir, "virtiofs.sock")), false);
  });

  test("missing guest files are reported with the keys and how to build them", async () => {
    const vm = createHypervisor(clh(), { ...sandbox, dir: tmp }, env);
    await assert.rejects(
      vm.start(),
      /hypervisor\.kernel_path = \/var\/lib\/kuasar\/vmlinux\.bin does not exist; .*make bin\/vmlinux\.bin bin\/kuasar\.img/,
    );
  });
});

describe("cloud-hypervisor room to grow on Update", () => {
  test("max vCPUs are the host's and hot-pluggable memory reaches the host's, in 128 MiB steps", () => {
    const plan = clhPlan(clh(), sandbox, "rust", { cpus: 4, memMiB: 3000 });
    const at = (flag: string) => plan.vmm.args[plan.vmm.args.indexOf(flag) + 1];
    assert.equal(at("--cpus"), "boot=1,max=4");
    assert.equal(at("--memory"), "size=1024M,shared=on,hotplug_size=1920M");
    assert.deepEqual(plan.extra, { vcpus: 1, maxVcpus: 4, memoryMiB: 1024, maxMemMiB: 2944 });
  });
});
