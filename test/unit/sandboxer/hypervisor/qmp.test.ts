import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { QmpClient, QmpError } from "../../../../runtime/sandboxer/hypervisor/qmp.ts";
import { recoverHypervisor } from "../../../../runtime/sandboxer/hypervisor/registry.ts";
import type { HypervisorState } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { env } from "../fixtures/driver-env.ts";
import { FakeQmp } from "../fixtures/fake-qmp.ts";
import { gone, standIn } from "../fixtures/procs.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-qmp-"));
});
after(() => rm(dir, { recursive: true, force: true }));

describe("QMP client", () => {
  let qmp: FakeQmp;
  let sock: string;
  beforeEach(async () => {
    sock = path.join(dir, `qmp-${Math.random().toString(36).slice(2)}.sock`);
    qmp = new FakeQmp(sock);
    await qmp.listen();
  });
  afterEach(() => qmp.close());

  test("greeting, capabilities first, then commands matched to answers", async () => {
    qmp.on("query-status", () => ({ return: { status: "running", running: true, singlestep: false } }));
    const c = await QmpClient.connect(sock, 2000);
    assert.deepEqual(c.version, { qemu: { major: 7, minor: 2, micro: 22 }, package: "" });
    const [a, b] = await Promise.all([c.execute("query-status"), c.execute("system_powerdown")]);
    assert.deepEqual(a, { status: "running", running: true, singlestep: false });
    assert.deepEqual(b, {});
    assert.deepEqual(
      qmp.received.map((r) => r.execute),
      ["qmp_capabilities", "query-status", "system_powerdown"],
    );
    c.close();
  });

  test("a refused command rejects with its QMP error class and description", async () => {
    const c = await QmpClient.connect(sock, 2000);
    const err = await c.execute("device_del", { id: 7 }).catch((e: unknown) => e);
    assert.ok(err instanceof QmpError);
    assert.equal(err.errorClass, "GenericError");
    assert.match(err.message, /QMP device_del failed: GenericError: Invalid parameter type for 'id'/);
    await assert.rejects(
      c.execute("no-such-command"),
      /CommandNotFound: The command no-such-command has not been found/,
    );
    c.close();
  });

  test("events reach listeners and waitEvent; a closed connection rejects what is pending", async () => {
    const c = await QmpClient.connect(sock, 2000);
    const seen: string[] = [];
    c.on("event", (e) => seen.push(e.event));
    const waited = c.waitEvent("DEVICE_DELETED", (e) => e.data?.device === "d2", 2000);
    qmp.emit("DEVICE_DELETED", { device: "d1" });
    qmp.emit("DEVICE_DELETED", { device: "d2", path: "/machine/peripheral/d2" });
    assert.deepEqual((await waited).data, { device: "d2", path: "/machine/peripheral/d2" });
    assert.deepEqual(seen, ["DEVICE_DELETED", "DEVICE_DELETED"]);
    qmp.on("query-status", () => {
      qmp.disconnect();
      return undefined;
    });
    const closed = new Promise<void>((r) => c.once("close", r));
    await assert.rejects(c.execute("query-status"), /QMP connection .* closed/);
    await closed;
    assert.equal(c.closed, true);
    await assert.rejects(c.execute("quit"), /is closed \(quit\)/);
  });

  test("connect waits for a socket that appears late, and gives up with the path in the error", async () => {
    const late = path.join(dir, "late.sock");
    const pending = QmpClient.connect(late, 3000);
    await new Promise((r) => setTimeout(r, 200));
    const q2 = new FakeQmp(late);
    await q2.listen();
    (await pending).close();
    await q2.close();
    await assert.rejects(QmpClient.connect(path.join(dir, "never.sock"), 200), /QMP .*never\.sock: .*ENOENT/);
  });
});

describe("QEMU driver over QMP (a recovered VM: the daemon did not start it)", () => {
  let qmp: FakeQmp;
  let state: HypervisorState;
  let vmm: Awaited<ReturnType<typeof standIn>>;
  let helper: Awaited<ReturnType<typeof standIn>>;
  let disk: string;

  beforeEach(async () => {
    const sbDir = await mkdtemp(path.join(dir, "sb-"));
    const sock = path.join(sbDir, "qmp.sock");
    qmp = new FakeQmp(sock);
    await qmp.listen();
    qmp.on("query-status", () => ({ return: { status: "running", running: true, singlestep: false } }));
    vmm = await standIn();
    helper = await standIn();
    disk = path.join(sbDir, "disk.img");
    await writeFile(disk, Buffer.alloc(4096));
    await writeFile(path.join(sbDir, "vmm.pid"), `${vmm.ref.pid}\n`);
    state = {
      kind: "qemu",
      id: "sb1",
      dir: sbDir,
      vmm: vmm.ref,
      helpers: [{ name: "vhost-device-vsock", ...helper.ref }],
      agentAddress: { kind: "hvsock", udsPath: path.join(sbDir, "task.vsock"), port: 1024 },
      consoleLog: path.join(sbDir, "console.log"),
      controlSocket: sock,
      files: [sock, path.join(sbDir, "vmm.pid")],
      devices: {},
      extra: { accel: "tcg", blockDriver: "VirtioBlk", hotplugBuses: "pci-bridge-0,pci-bridge-1", machine: "pc" },
    };
  });
  afterEach(async () => {
    vmm.child.kill("SIGKILL");
    helper.child.kill("SIGKILL");
    await qmp.close();
  });

  test("recover reattaches and reports the VMM's status", async () => {
    const vm = await recoverHypervisor(state, env);
    assert.deepEqual(await vm.status(), { state: "running", detail: "running" });
    assert.deepEqual(vm.persistState(), state);
    vm.detach();
  });

  test("hot-plug (pc: onto the root bus) and removal, which waits for the guest's DEVICE_DELETED", async () => {
    const vm = await recoverHypervisor(state, env);
    assert.deepEqual(await vm.hotplugDisk({ id: "d1", path: disk, readOnly: true }), { id: "d1", serial: "d1" });
    await vm.hotplugDisk({ id: "d2", path: disk, readOnly: false });
    const plugged = qmp.received.filter((r) => r.execute !== "qmp_capabilities");
    const plug = (id: string, readOnly: boolean, bus: string) => [
      {
        execute: "blockdev-add",
        arguments: { "node-name": `file-${id}`, driver: "file", filename: disk, "read-only": readOnly },
      },
      {
        execute: "blockdev-add",
        arguments: { "node-name": `drive-${id}`, driver: "raw", file: `file-${id}`, "read-only": readOnly },
      },
      {
        execute: "device_add",
        arguments: { driver: "virtio-blk-pci", id, drive: `drive-${id}`, bus, serial: id },
      },
    ];
    // The bridges stay empty: the guest's firmware gave them no address windows, so a disk behind one never works.
    assert.deepEqual(plugged, [...plug("d1", true, "pci.0"), ...plug("d2", false, "pci.0")]);
    assert.deepEqual(vm.persistState().devices, {
      d1: { node: "drive-d1", bus: "pci.0" },
      d2: { node: "drive-d2", bus: "pci.0" },
    });

    qmp.received.length = 0;
    qmp.on("device_del", (args, q) => {
      setTimeout(() => q.emit("DEVICE_DELETED", { device: args.id, path: `/machine/peripheral/${args.id}` }), 50);
      return undefined;
    });
    qmp.on("blockdev-del", (args) =>
      args["node-name"] === "null-d1"
        ? { error: { class: "GenericError", desc: "Failed to find node with node-name='null-d1'" } }
        : undefined,
    );
    assert.equal(await vm.removeDevice("d1"), "removed");
    assert.deepEqual(qmp.received, [
      { execute: "device_del", arguments: { id: "d1" } },
      { execute: "blockdev-del", arguments: { "node-name": "drive-d1" } },
      { execute: "blockdev-del", arguments: { "node-name": "file-d1" } },
      { execute: "blockdev-del", arguments: { "node-name": "null-d1" } },
    ]);
    assert.deepEqual(Object.keys(vm.persistState().devices), ["d2"]);
    await assert.rejects(
      vm.hotplugDisk({ id: "has space", path: disk, readOnly: true }),
      /disk id 'has space' must be 1-20 characters/,
    );
    await assert.rejects(vm.removeDevice("../x"), /disk id '\.\.\/x' must be 1-20 characters/);
    await assert.rejects(vm.hotplugDisk({ id: "d2", path: disk, readOnly: true }), /device d2 is already plugged/);
    vm.detach();
  });

  test("q35: one disk per PCIe root port, and a clear error when all are taken", async () => {
    const vm = await recoverHypervisor(
      { ...state, extra: { ...state.extra, machine: "q35", hotplugBuses: "rp0,rp1" } },
      env,
    );
    // Side by side (two containers created at once): each takes a port of its own.
    await Promise.all([
      vm.hotplugDisk({ id: "d1", path: disk, readOnly: true }),
      vm.hotplugDisk({ id: "d2", path: disk, readOnly: true }),
    ]);
    assert.deepEqual(
      Object.values(vm.persistState().devices).map((d) => d.bus),
      ["rp0", "rp1"],
    );
    await assert.rejects(
      vm.hotplugDisk({ id: "d3", path: disk, readOnly: true }),
      /all 2 PCIe root ports are in use: raise default_bridges/,
    );
    vm.detach();
  });

  test("a device an earlier daemon plugged is removed from its id; one QEMU no longer has counts as removed", async () => {
    const missing = (what: string) => ({
      error: { class: "GenericError", desc: `Failed to find node with node-name='${what}'` },
    });
    qmp.on("device_del", () => ({ error: { class: "DeviceNotFound", desc: "Device 'kdOld' not found" } }));
    qmp.on("blockdev-del", (args) =>
      args["node-name"] === "file-kdOld" ? undefined : missing(String(args["node-name"])),
    );
    const vm = await recoverHypervisor(state, env);
    assert.equal(await vm.removeDevice("kdOld"), "removed");
    assert.deepEqual(
      qmp.received.filter((r) => r.execute !== "qmp_capabilities").map((r) => [r.execute, r.arguments]),
      [
        ["device_del", { id: "kdOld" }],
        ["blockdev-del", { "node-name": "drive-kdOld" }],
        ["blockdev-del", { "node-name": "file-kdOld" }],
        ["blockdev-del", { "node-name": "null-kdOld" }],
      ],
    );
    vm.detach();
  });

  // Attack: a guest that never lets go of a disk (it ignores the unplug) must not keep the host file open in QEMU.
  test("a guest that never releases a disk: after the bound the host file is swapped for an empty backend", async () => {
    const vm = await recoverHypervisor(state, env);
    await vm.hotplugDisk({ id: "d1", path: disk, readOnly: false });
    qmp.received.length = 0;
    const t = Date.now();
    assert.equal(await vm.removeDevice("d1", { timeoutMs: 200 }), "cut-off");
    assert.ok(Date.now() - t >= 200, "the guest was given its time");
    assert.deepEqual(
      qmp.received.map((r) => [r.execute, r.arguments]),
      [
        ["device_del", { id: "d1" }],
        ["blockdev-add", { "node-name": "null-d1", driver: "null-co", "read-zeroes": true }],
        ["blockdev-reopen", { options: [{ "node-name": "drive-d1", driver: "raw", file: "null-d1" }] }],
        ["blockdev-del", { "node-name": "file-d1" }],
      ],
    );
    // Asked again (a retried delete, a teardown): nothing more to cut; once the guest lets go, it is removed.
    qmp.received.length = 0;
    qmp.on("device_del", () => ({
      error: { class: "GenericError", desc: "Device d1 is already in the process of unplug" },
    }));
    qmp.on("blockdev-add", (args) =>
      args["node-name"] === "null-d1"
        ? { error: { class: "GenericError", desc: "Duplicate nodes with node-name='null-d1'" } }
        : undefined,
    );
    assert.equal(await vm.removeDevice("d1", { timeoutMs: 100 }), "cut-off");
    assert.deepEqual(
      qmp.received.map((r) => r.execute),
      ["device_del", "blockdev-add"],
    );
    qmp.received.length = 0;
    qmp.on("device_del", (args, q) => {
      setTimeout(() => q.emit("DEVICE_DELETED", { device: args.id }), 20);
      return { error: { class: "GenericError", desc: "Device d1 is already in the process of unplug" } };
    });
    qmp.on("blockdev-del", (args) =>
      args["node-name"] === "file-d1"
        ? { error: { class: "GenericError", desc: "Failed to find node with node-name='file-d1'" } }
        : undefined,
    );
    assert.equal(await vm.removeDevice("d1", { timeoutMs: 2000 }), "removed");
    assert.deepEqual(
      qmp.received.map((r) => [r.execute, r.arguments?.["node-name"] ?? r.arguments?.id]),
      [
        ["device_del", "d1"],
        ["blockdev-del", "drive-d1"],
        ["blockdev-del", "file-d1"],
        ["blockdev-del", "null-d1"],
      ],
    );
    assert.deepEqual(vm.persistState().devices, {});
    vm.detach();
  });

  test("a failed device_add takes its block nodes back out", async () => {
    qmp.on("device_add", () => ({
      error: { class: "GenericError", desc: "Bus 'pci.0' does not support hotplugging" },
    }));
    const vm = await recoverHypervisor(state, env);
    await assert.rejects(
      vm.hotplugDisk({ id: "d1", path: disk, readOnly: true }),
      /hot-plug of d1 .* failed: QMP device_add failed: GenericError: Bus 'pci.0' does not support hotplugging/,
    );
    assert.deepEqual(qmp.received.slice(-2), [
      { execute: "blockdev-del", arguments: { "node-name": "drive-d1" } },
      { execute: "blockdev-del", arguments: { "node-name": "file-d1" } },
    ]);
    assert.deepEqual(vm.persistState().devices, {});
    vm.detach();
  });

  test("stop: ACPI power-off first; a guest that ignores it gets quit; helpers and files go afterwards", async () => {
    qmp.on("quit", (_a, q) => {
      setTimeout(() => {
        q.emit("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
        vmm.child.kill("SIGTERM");
        q.disconnect();
      }, 20);
      return undefined;
    });
    const vm = await recoverHypervisor(state, env);
    const t = Date.now();
    const exit = await vm.stop(300);
    assert.ok(Date.now() - t >= 300, "the guest was given its timeout");
    assert.deepEqual(
      qmp.received.map((r) => r.execute),
      ["qmp_capabilities", "system_powerdown", "quit"],
    );
    // Not our child, so no exit code: the SHUTDOWN event says it was orderly.
    assert.equal(exit.exitStatus, 0);
    await gone(helper.child);
    assert.equal(helper.child.signalCode, "SIGTERM");
    assert.equal(existsSync(state.controlSocket), false);
    assert.equal(existsSync(path.join(state.dir, "vmm.pid")), false);
    assert.deepEqual(await vm.status(), { state: "exited", detail: "the VMM has exited" });
    assert.deepEqual(await vm.wait(), exit);
  });

  test("a VMM that ignores quit too is killed", async () => {
    const vm = await recoverHypervisor(state, env);
    const exit = await vm.stop(0);
    assert.equal(exit.exitStatus, 255);
    await gone(vmm.child);
    assert.equal(vmm.child.signalCode, "SIGKILL");
  });

  test("kill -9 of the VMM ends wait(): the daemon polls a VMM it did not start", { timeout: 60_000 }, async () => {
    const vm = await recoverHypervisor(state, env);
    let ended = false;
    const waited = vm.wait().finally(() => {
      ended = true;
    });
    await new Promise((r) => setTimeout(r, 3 * env.pollMs));
    assert.equal(ended, false, "wait() ended while the VMM still ran");
    vmm.child.kill("SIGKILL");
    const exit = await waited;
    assert.equal(exit.exitStatus, 255);
    await gone(helper.child);
  });

  test("recovery fails fast, with the reason, for a dead VMM or a silent control socket", {
    timeout: 60_000,
  }, async () => {
    await assert.rejects(
      recoverHypervisor({ ...state, vmm: { pid: vmm.ref.pid, startTime: vmm.ref.startTime + 1 } }, env),
      new RegExp(`sandbox sb1: VMM pid ${vmm.ref.pid} is no longer running`),
    );
    await assert.rejects(
      recoverHypervisor({ ...state, controlSocket: path.join(state.dir, "missing.sock") }, env),
      new RegExp(`sandbox sb1: VMM pid ${vmm.ref.pid} runs but QMP .*missing\\.sock`),
    );
  });
});
