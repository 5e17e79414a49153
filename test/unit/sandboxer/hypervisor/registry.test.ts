import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { describeSchema } from "../../../../runtime/sandboxer/config/describe.ts";
import { defaultConfig } from "../../../../runtime/sandboxer/config/schema.ts";
import { HYPERVISORS } from "../../../../runtime/sandboxer/hypervisor/names.ts";
import { createHypervisor, VMMS } from "../../../../runtime/sandboxer/hypervisor/registry.ts";
import { env, sandbox } from "../fixtures/driver-env.ts";

const NAMES = path.resolve(import.meta.dirname, "../../../../runtime/sandboxer/hypervisor/names.ts");

test("the registry has one descriptor per name in names.ts, in its order, each under its own name", () => {
  assert.deepEqual(Object.keys(VMMS), [...HYPERVISORS]);
  for (const [key, vmm] of Object.entries(VMMS)) assert.equal(vmm.name, key);
});

test("names.ts imports nothing, so the pipeline and the node installer load no driver with it", async () => {
  const source = await readFile(NAMES, "utf8");
  assert.doesNotMatch(source, /^\s*import\b/m);
});

test("a VMM's own keys and tables are listed for it alone, and every configuration holds every key", () => {
  const rows = new Map(describeSchema().map((r) => [r.key, r.hypervisors]));
  for (const vmm of Object.values(VMMS)) {
    const { sandbox: s, hypervisor: h, tables } = vmm.config.keys;
    const own = [
      ...Object.keys(s).map((k) => `sandbox.${k}`),
      ...Object.keys(h).map((k) => `hypervisor.${k}`),
      ...Object.entries(tables).flatMap(([t, fields]) => Object.keys(fields).map((k) => `hypervisor.${t}.${k}`)),
    ];
    for (const key of own) assert.deepEqual(rows.get(key), [vmm.name], key);
  }
  const keys = (hv: (typeof HYPERVISORS)[number]) => JSON.stringify(Object.keys(defaultConfig(hv).hypervisor).sort());
  for (const hv of HYPERVISORS) assert.equal(keys(hv), keys("qemu"), hv);
});

test("createHypervisor builds the driver of the VMM the configuration names", () => {
  for (const hv of HYPERVISORS) {
    const vm = createHypervisor(defaultConfig(hv), { ...sandbox, dir: `/nonexistent/${hv}` }, env);
    assert.equal(vm.kind, hv);
    assert.ok(vm instanceof VMMS[hv].driver);
  }
});
