import assert from "node:assert/strict";
import { test } from "node:test";
import { vmSize } from "../../../../runtime/sandboxer/sandbox/vm-size.ts";

const base = { vcpus: 1, memoryMiB: 512 };

test("a pod without limits gets the configured VM", () => {
  assert.deepEqual({ ...vmSize(base, undefined, 8), why: "" }, { vcpus: 1, memoryMiB: 512, why: "" });
  assert.equal(vmSize(base, { cpuQuota: "0", memoryLimitInBytes: "0" }, 8).vcpus, 1);
});

test("the pod's limits come on top of the configured size; CPUs round up and stop at the host's", () => {
  const s = vmSize(base, { cpuQuota: "150000", cpuPeriod: "100000", memoryLimitInBytes: "268435457" }, 8);
  assert.equal(s.vcpus, 3, "1 configured + ceil(1.5)");
  assert.equal(s.memoryMiB, 512 + 257, "256 MiB and one byte: 257 MiB more");
  assert.match(s.why, /plus the pod's limits \(2 CPU, 257 MiB\)/);
  assert.equal(vmSize(base, { cpuQuota: 800000, cpuPeriod: 100000 }, 2).vcpus, 2, "capped at the host's 2 CPUs");
  assert.equal(vmSize({ ...base, maxVcpus: 4 }, { cpuQuota: 800000 }, 16).vcpus, 4, "default_max_vcpus caps too");
  assert.match(vmSize(base, { cpuQuota: 800000 }, 2).why, /vCPUs capped at 2/);
});
