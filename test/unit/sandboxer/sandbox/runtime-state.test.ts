import assert from "node:assert/strict";
import { test } from "node:test";
import type { SandboxRecord } from "../../../../runtime/sandboxer/sandbox/record.ts";
import { type RuntimeState, runtimeStateOf } from "../../../../runtime/sandboxer/sandbox/runtime-state.ts";

/** What VmLauncher.start stores for a QEMU sandbox over hybrid vsock with one tap. */
function state(): RuntimeState {
  const dir = "/run/kuasar-vmm/pod1";
  return {
    vm: {
      kind: "qemu",
      id: "pod1",
      dir,
      vmm: { pid: 4242, startTime: 123456 },
      helpers: [{ name: "vhost-device-vsock", pid: 4240, startTime: 123400 }],
      agentAddress: { kind: "hvsock", udsPath: `${dir}/task.vsock`, port: 1024 },
      consoleLog: `${dir}/console.log`,
      console: { socket: `${dir}/console.sock`, maxBytes: 1048576 },
      controlSocket: `${dir}/qmp.sock`,
      files: [`${dir}/qmp.sock`, `${dir}/vmm.pid`],
      devices: { disk0: { node: "drive-disk0", bus: "pci.1" } },
      extra: { diskTransport: "virtio-blk", nvdimm: false, slots: 2 },
      cgroupProcs: ["/sys/fs/cgroup/kubepods/kuasar-vmm-pod1/cgroup.procs"],
      helperUid: 200000,
      helperDirs: [`${dir}/vsock`],
    },
    agent: { kind: "hvsock", udsPath: `${dir}/task.vsock`, port: 1024 },
    nics: [{ tap: "tap_kua_2", veth: "eth0", ifindex: 2, mac: "02:42:ac:11:00:02", mtu: 1500 }],
  };
}

/** A record as read back from sandbox.json, its runtime state as JSON left it. */
function recordWith(runtime: unknown): SandboxRecord {
  return {
    id: "pod1",
    state: "running",
    createdAt: "2024-01-01T00:00:00.000Z",
    netnsPath: "/var/run/netns/pod1",
    annotations: {},
    labels: {},
    nextStorage: 0,
    runtime: JSON.parse(JSON.stringify(runtime)),
  };
}

test("the runtime state VmLauncher.start stores is read back as it was written", () => {
  assert.deepEqual(runtimeStateOf(recordWith(state())), state());
});

test("a sandbox that never started has no runtime state", () => {
  const { runtime: _, ...rec } = recordWith({});
  assert.equal(runtimeStateOf(rec), undefined);
});

test("a state from an earlier daemon (no console socket, helper uid or dirs) and a vhost-vsock agent is accepted", () => {
  const s = state();
  delete s.vm.console;
  delete s.vm.helperUid;
  delete s.vm.helperDirs;
  delete s.vm.agentAddress;
  s.agent = { kind: "vsock", cid: 3, port: 1024 };
  s.nics = [];
  assert.deepEqual(runtimeStateOf(recordWith(s)), s);
});

test("fields a newer daemon added are kept for the code that reads them", () => {
  const s = { ...state(), later: { x: 1 }, vm: { ...state().vm, laterVm: "y" } };
  assert.deepEqual(runtimeStateOf(recordWith(s)), s);
});

test("a corrupt runtime state is refused with an error naming the sandbox and the field", () => {
  const cases: Array<[string, (s: RuntimeState) => unknown, RegExp]> = [
    ["runtime null", () => null, /runtime is null, an object expected/],
    ["runtime an array", () => [], /runtime is \[\], an object expected/],
    [
      "unknown VMM",
      (s) => ({ ...s, vm: { ...s.vm, kind: "firecracker" } }),
      /runtime\.vm\.kind is "firecracker", one of qemu, cloud-hypervisor, stratovirt expected/,
    ],
    ["no agent", (s) => ({ ...s, agent: undefined }), /runtime\.agent is missing \(an object expected\)/],
    [
      "agent kind",
      (s) => ({ ...s, agent: { kind: "tcp", port: 1 } }),
      /runtime\.agent\.kind is "tcp", one of hvsock, vsock expected/,
    ],
    [
      "agent port",
      (s) => ({ ...s, agent: { ...s.agent, port: "1024" } }),
      /runtime\.agent\.port is "1024", an integer >= 0 expected/,
    ],
    ["no nics", (s) => ({ ...s, nics: undefined }), /runtime\.nics is missing \(an array expected\)/],
    ["nic mtu", (s) => ({ ...s, nics: [{ ...s.nics[0], mtu: "1500" }] }), /runtime\.nics\[0\]\.mtu is "1500"/],
    [
      "helper pid",
      (s) => ({ ...s, vm: { ...s.vm, helpers: [{ name: "x", pid: -1, startTime: 0 }] } }),
      /runtime\.vm\.helpers\[0\]\.pid is -1, an integer >= 1 expected/,
    ],
    ["vmm pid", (s) => ({ ...s, vm: { ...s.vm, vmm: { pid: 1.5, startTime: 0 } } }), /runtime\.vm\.vmm\.pid is 1\.5/],
    [
      "files",
      (s) => ({ ...s, vm: { ...s.vm, files: "vmm.pid" } }),
      /runtime\.vm\.files is "vmm\.pid", an array expected/,
    ],
    [
      "extra",
      (s) => ({ ...s, vm: { ...s.vm, extra: { a: { b: 1 } } } }),
      /runtime\.vm\.extra\.a is \{"b":1\}, a string, number or boolean expected/,
    ],
    [
      "device",
      (s) => ({ ...s, vm: { ...s.vm, devices: { d: { node: 7 } } } }),
      /runtime\.vm\.devices\.d\.node is 7, a string expected/,
    ],
    [
      "console",
      (s) => ({ ...s, vm: { ...s.vm, console: { socket: "c" } } }),
      /runtime\.vm\.console\.maxBytes is missing/,
    ],
  ];
  for (const [name, corrupt, field] of cases) {
    const rec = recordWith(corrupt(state()));
    assert.throws(
      () => runtimeStateOf(rec),
      (err: Error) => {
        assert.match(err.message, /^sandbox pod1: its sandbox\.json is not one this vmm-sandboxer can use: /, name);
        assert.match(err.message, field, name);
        return true;
      },
    );
  }
});

test("a long value is cut in the error", () => {
  const rec = recordWith({ ...state(), agent: "x".repeat(1000) });
  assert.throws(() => runtimeStateOf(rec), /runtime\.agent is "x{59}\.\.\., an object expected/);
});
