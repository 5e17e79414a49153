import assert from "node:assert/strict";
import { test } from "node:test";
import type { Logger } from "../../../../runtime/log/log.ts";
import type { VmShape } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { demandOf, resourcesInUpdate, VmResizer } from "../../../../runtime/sandboxer/sandbox/vm-resize.ts";
import type { TtrpcClient } from "../../../../runtime/ttrpc/index.ts";

const MIB = 1048576;

/** A VM that grows as asked, and a guest that onlines what it has (or claims `onlined` when given). */
function rig(opts: { maxVcpus?: number; hostCpus?: number; onlined?: { cpus: number; mib: number } } = {}) {
  const shape: VmShape = { vcpus: 1, memoryMiB: 512, maxVcpus: opts.maxVcpus ?? 4, maxMemoryMiB: 8192 };
  const grows: Array<{ vcpus: number; memoryMiB: number }> = [];
  const lines: string[] = [];
  const vm = {
    size: async () => ({ ...shape }),
    grow: async (t: { vcpus: number; memoryMiB: number }) => {
      grows.push(t);
      // Slow enough that a second call would overlap if calls were not taken in turn.
      await new Promise((r) => setTimeout(r, 20));
      shape.vcpus = t.vcpus;
      shape.memoryMiB = t.memoryMiB;
    },
  };
  const agent = {
    service: () => ({
      onlineCpuMem: async () => ({
        onlineCpus: opts.onlined?.cpus ?? shape.vcpus,
        onlineMemoryBytes: BigInt((opts.onlined?.mib ?? shape.memoryMiB) * MIB),
      }),
    }),
  } as unknown as TtrpcClient;
  const log = {
    info: (m: string) => lines.push(`info ${m}`),
    warn: (m: string) => lines.push(`warn ${m}`),
  } as unknown as Logger;
  const resizer = new VmResizer({
    vm,
    agent: () => agent,
    base: { vcpus: 1, memoryMiB: 512 },
    pod: { cpus: 0, memoryBytes: 0 },
    hostCpus: opts.hostCpus ?? 8,
    log,
  });
  return { resizer, grows, lines, shape };
}

test("an Update raising a container to 1 CPU and 256 MiB grows a 1 vCPU / 512 MiB VM to 2 vCPU / 768 MiB", async () => {
  const { resizer, grows, lines } = rig();
  await resizer.setContainer("c1", undefined);
  assert.deepEqual(grows, [], "a container without limits needs no more than the base");
  await resizer.setContainer("c1", { cpu: { quota: 100_000, period: 100_000 }, memory: { limit: 256 * MIB } });
  assert.deepEqual(grows, [{ vcpus: 2, memoryMiB: 768 }]);
  assert.match(lines.join("\n"), /VM grown from 1 vCPU \/ 512 MiB to 2 vCPU \/ 768 MiB/);
});

test("containers' limits add up; the pod's own limits count when they are larger; fractions round up", async () => {
  const { resizer, grows } = rig();
  await resizer.setContainer("a", { cpu: { quota: 50_000, period: 100_000 } });
  await resizer.setContainer("b", { cpu: { quota: 60_000, period: 100_000 }, memory: { limit: 100 * MIB } });
  assert.deepEqual(grows.at(-1), { vcpus: 3, memoryMiB: 612 });
  await resizer.setPod({ cpu: { quota: 300_000, period: 100_000 }, memory: { limit: 1024 * MIB } });
  assert.deepEqual(grows.at(-1), { vcpus: 4, memoryMiB: 1536 });
});

test("an Update that leaves a field out keeps its value, as runc update does", async () => {
  const { resizer, grows } = rig();
  await resizer.setContainer("c", { cpu: { quota: 100_000, period: 100_000 }, memory: { limit: 256 * MIB } });
  await resizer.setContainer("c", { cpu: { quota: 200_000 } });
  assert.deepEqual(grows.at(-1), { vcpus: 3, memoryMiB: 768 });
});

test("lowering is deferred with the reason; a deleted container's share is not unplugged", async () => {
  const { resizer, grows, lines } = rig();
  await resizer.setContainer("c", { cpu: { quota: 100_000, period: 100_000 } });
  resizer.forget("c");
  await resizer.setContainer("d", undefined);
  assert.equal(grows.length, 1);
  assert.match(lines.join("\n"), /the VM keeps its 2 vCPU \/ 512 MiB until the pod is recreated/);
});

test("vCPUs stop at the VM's ceiling with a warning; memory is still grown", async () => {
  const { resizer, grows, lines } = rig({ maxVcpus: 2 });
  await resizer.setContainer("c", { cpu: { quota: 400_000, period: 100_000 }, memory: { limit: 128 * MIB } });
  assert.deepEqual(grows, [{ vcpus: 2, memoryMiB: 640 }]);
  assert.match(lines.join("\n"), /5 vCPUs wanted, the VM can take 2/);
});

test("concurrent updates are taken in turn, each against the demands as they are then", async () => {
  const { resizer, grows } = rig();
  await Promise.all([
    resizer.setContainer("a", { memory: { limit: 128 * MIB } }),
    resizer.setContainer("b", { memory: { limit: 128 * MIB } }),
  ]);
  assert.deepEqual(
    grows,
    [{ vcpus: 1, memoryMiB: 768 }],
    "the first turn already saw both; the second had nothing to do",
  );
});

test("attack: a guest that does not online what was plugged fails the Update; one that claims more changes nothing", async () => {
  const short = rig({ onlined: { cpus: 1, mib: 512 } });
  await assert.rejects(
    short.resizer.setContainer("c", { cpu: { quota: 100_000, period: 100_000 } }),
    /grown to 2 vCPU \/ 512 MiB, but the guest has only 1 vCPU \/ 512 MiB online/,
  );
  const boast = rig({ onlined: { cpus: 4096, mib: 2 ** 40 } });
  await boast.resizer.setContainer("c", { cpu: { quota: 100_000, period: 100_000 } });
  assert.deepEqual(boast.grows, [{ vcpus: 2, memoryMiB: 512 }]);
  assert.equal(boast.shape.vcpus, 2, "the VM's size is the VMM's word, not the guest's");
});

test("limits: non-numbers, negatives and infinities ask for nothing; a non-JSON Update carries no limits", () => {
  assert.deepEqual(demandOf({ cpu: { quota: -1, period: 100_000 }, memory: { limit: -1 } }), {
    cpus: 0,
    memoryBytes: 0,
  });
  assert.deepEqual(demandOf({ cpu: { quota: 100_000, period: 0 } }), { cpus: 1, memoryBytes: 0 });
  assert.equal(resourcesInUpdate({ value: Buffer.from("not json") }), undefined);
  assert.deepEqual(resourcesInUpdate({ value: Buffer.from('{"cpu":{"quota":"9e9"},"memory":{"limit":1e400}}') }), {});
  assert.deepEqual(resourcesInUpdate({ value: Buffer.from('{"cpu":{"quota":150000,"period":100000}}') }), {
    cpu: { quota: 150_000, period: 100_000 },
  });
});
