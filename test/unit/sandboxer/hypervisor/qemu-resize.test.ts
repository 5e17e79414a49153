import assert from "node:assert/strict";
import { test } from "node:test";
import { qemuGrow, qemuSize } from "../../../../runtime/sandboxer/hypervisor/qemu/resize.ts";
import type { QmpClient } from "../../../../runtime/sandboxer/hypervisor/qmp.ts";

const MIB = 1048576;

/** A QEMU that answers the queries resizing makes, keeps what device_add plugs, and records every command. */
function fakeQemu(opts: { cpus?: number; maxCpus?: number } = {}) {
  const calls: Array<[string, Record<string, unknown> | undefined]> = [];
  let cpus = opts.cpus ?? 1;
  const dimms: Array<{ id: string; size: number; addr: number }> = [];
  const backends = new Map<string, number>();
  const qmp = {
    async execute(cmd: string, args?: Record<string, unknown>) {
      calls.push([cmd, args]);
      switch (cmd) {
        case "query-cpus-fast":
          return Array.from({ length: cpus }, (_, i) => ({ "cpu-index": i }));
        case "query-memory-devices":
          return [
            // QEMU's device memory starts at 4 GiB; the image is not a multiple of 128 MiB.
            { type: "nvdimm", data: { id: "nv-rootfs", size: 150 * MIB, addr: 4096 * MIB } },
            ...dimms.map((d) => ({ type: "dimm", data: d })),
          ];
        case "query-hotpluggable-cpus":
          // Highest first, as QEMU lists them.
          return Array.from({ length: opts.maxCpus ?? 4 }, (_, i) => i)
            .reverse()
            .map((i) => ({
              type: "max-x86_64-cpu",
              "vcpus-count": 1,
              props: { "socket-id": i, "core-id": 0, "thread-id": 0 },
              ...(i < cpus ? { "qom-path": `/machine/unattached/device[${i}]` } : {}),
            }));
        case "object-add":
          backends.set(String(args?.id), Number(args?.size));
          return {};
        case "device_add":
          if (args?.driver === "pc-dimm")
            dimms.push({
              id: String(args.id),
              size: backends.get(String(args.memdev)) ?? 0,
              addr: Number(args.addr),
            });
          else cpus++;
          return {};
        default:
          throw new Error(`unexpected ${cmd}`);
      }
    },
  } as unknown as QmpClient;
  return { qmp, calls, adds: () => calls.filter(([c]) => c === "device_add" || c === "object-add") };
}

const EXTRA = {
  vcpus: 1,
  maxVcpus: 4,
  memoryMiB: 512,
  maxMemMiB: 4096,
  memSlots: 2,
  memBackend: "memory-backend-memfd",
  memPath: "",
  memShared: true,
  memPrealloc: false,
};

test("size: vCPUs and DIMMs as QEMU reports them (the NVDIMM is not RAM), ceilings from the plan", async () => {
  const { qmp } = fakeQemu({ cpus: 2 });
  assert.deepEqual(await qemuSize(qmp, EXTRA), { vcpus: 2, memoryMiB: 512, maxVcpus: 4, maxMemoryMiB: 4096 });
});

test("grow: free CPU slots in topology order, and one DIMM with a backend like the boot memory's, rounded to 128 MiB", async () => {
  const q = fakeQemu();
  await qemuGrow(q.qmp, EXTRA, { vcpus: 3, memoryMiB: 700 }, "sb1");
  assert.deepEqual(q.adds(), [
    ["object-add", { "qom-type": "memory-backend-memfd", id: "mem-dimm-0", size: 256 * MIB, share: true }],
    // After the NVDIMM, on the next 128 MiB boundary, where the guest can online it.
    ["device_add", { driver: "pc-dimm", id: "dimm-0", memdev: "mem-dimm-0", addr: (4096 + 256) * MIB }],
    ["device_add", { driver: "max-x86_64-cpu", id: "vcpu-1", "socket-id": 1, "core-id": 0, "thread-id": 0 }],
    ["device_add", { driver: "max-x86_64-cpu", id: "vcpu-2", "socket-id": 2, "core-id": 0, "thread-id": 0 }],
  ]);
  assert.deepEqual(await qemuSize(q.qmp, EXTRA), { vcpus: 3, memoryMiB: 768, maxVcpus: 4, maxMemoryMiB: 4096 });
  // Already there: nothing more is plugged.
  await qemuGrow(q.qmp, EXTRA, { vcpus: 3, memoryMiB: 768 }, "sb1");
  assert.equal(q.adds().length, 4);
  // A second increase takes the next slot and id.
  await qemuGrow(
    q.qmp,
    { ...EXTRA, memBackend: "memory-backend-file", memPath: "/dev/hugepages" },
    { vcpus: 3, memoryMiB: 1024 },
    "sb1",
  );
  assert.deepEqual(q.adds().slice(4), [
    [
      "object-add",
      {
        "qom-type": "memory-backend-file",
        id: "mem-dimm-1",
        size: 256 * MIB,
        "mem-path": "/dev/hugepages",
        share: true,
      },
    ],
    ["device_add", { driver: "pc-dimm", id: "dimm-1", memdev: "mem-dimm-1", addr: (4096 + 512) * MIB }],
  ]);
});

test("grow refuses, naming the key, what the VM was not started able to take", async () => {
  const q = fakeQemu();
  await assert.rejects(
    qemuGrow(q.qmp, EXTRA, { vcpus: 5, memoryMiB: 512 }, "sb1"),
    /sandbox sb1: 5 vCPUs asked.*at most 4 \(hypervisor\.default_max_vcpus/,
  );
  await assert.rejects(
    qemuGrow(q.qmp, { ...EXTRA, memSlots: 0 }, { vcpus: 1, memoryMiB: 640 }, "sb1"),
    /no free memory slot.*hypervisor\.mem_slots/,
  );
  await assert.rejects(
    qemuGrow(q.qmp, { ...EXTRA, maxMemMiB: 600 }, { vcpus: 1, memoryMiB: 640 }, "sb1"),
    /640 MiB would exceed the VM's maxmem of 600 MiB/,
  );
  assert.deepEqual(q.adds(), [], "nothing was plugged by a refused grow");
});
