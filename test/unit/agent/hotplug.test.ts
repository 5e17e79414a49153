import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { onlineAll, onlineUntil, type SysPaths } from "../../../runtime/agent/hotplug.ts";

const roots: string[] = [];
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A sysfs lookalike: cpu0 without an online file (it cannot go offline), the others with their state. */
function sysfs(cpus: Array<"0" | "1" | undefined>, blocks: Array<"online" | "offline">): SysPaths {
  const root = mkdtempSync(path.join(os.tmpdir(), "hotplug-"));
  roots.push(root);
  const sys = { cpu: path.join(root, "cpu"), memory: path.join(root, "memory") };
  cpus.forEach((state, i) => {
    mkdirSync(path.join(sys.cpu, `cpu${i}`), { recursive: true });
    if (state) writeFileSync(path.join(sys.cpu, `cpu${i}`, "online"), `${state}\n`);
  });
  // Files beside the cpuN directories that must not be counted.
  writeFileSync(path.join(sys.cpu, "online"), "0\n");
  mkdirSync(path.join(sys.cpu, "cpufreq"));
  mkdirSync(sys.memory, { recursive: true });
  writeFileSync(path.join(sys.memory, "block_size_bytes"), "8000000\n");
  blocks.forEach((state, i) => {
    mkdirSync(path.join(sys.memory, `memory${i}`));
    writeFileSync(path.join(sys.memory, `memory${i}`, "state"), `${state}\n`);
  });
  return sys;
}

test("onlines offline vCPUs and memory blocks and counts what is online", async () => {
  const sys = sysfs([undefined, "1", "0"], ["online", "online", "offline"]);
  assert.deepEqual(await onlineAll(sys), { cpus: 3, memoryBytes: 3 * 128 * 1048576 });
  assert.equal(readFileSync(path.join(sys.cpu, "cpu2", "online"), "utf8"), "1");
  assert.equal(readFileSync(path.join(sys.memory, "memory2", "state"), "utf8"), "online");
});

test("onlineUntil waits for what arrives, and gives up at its timeout with what is online", async () => {
  const sys = sysfs([undefined], ["online"]);
  const waiting = onlineUntil({ cpus: 2, memoryBytes: 0 }, 30_000, sys);
  // The vCPU shows up (offline) after the call started, as an ACPI hot-add does.
  setTimeout(() => {
    mkdirSync(path.join(sys.cpu, "cpu1"));
    writeFileSync(path.join(sys.cpu, "cpu1", "online"), "0\n");
  }, 120);
  assert.deepEqual(await waiting, { cpus: 2, memoryBytes: 128 * 1048576 });
  assert.deepEqual(await onlineUntil({ cpus: 8, memoryBytes: 0 }, 0, sys), { cpus: 2, memoryBytes: 128 * 1048576 });
});
