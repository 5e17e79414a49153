import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { PodCgroup, parentPath } from "../../../../runtime/sandboxer/sandbox/pod-cgroup.ts";

const tmp = await mkdtemp(path.join(os.tmpdir(), "pod-cgroup-"));
after(() => rm(tmp, { recursive: true, force: true }));

const mountinfo = (lines: string[]) => `${lines.join("\n")}\n`;

test("cgroup_parent: cgroupfs paths are kept, systemd slices expanded as systemd nests them, bad ones refused", () => {
  assert.equal(parentPath("/kubepods/burstable/pod1"), "/kubepods/burstable/pod1");
  assert.equal(
    parentPath("kubepods-burstable-pod1.slice"),
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice",
  );
  assert.equal(parentPath("-.slice"), "/");
  assert.throws(() => parentPath("kubepods/x"), /must be an absolute path or a systemd slice name/);
  assert.throws(() => parentPath("/kubepods/../etc"), /must be an absolute path/);
  assert.throws(() => parentPath("a--b.slice"), /not a valid systemd slice name/);
});

test("cgroup v2: one directory, controllers enabled on the way down, limits and stats from its files", async () => {
  const root = path.join(tmp, "v2");
  await mkdir(path.join(root, "kubepods/pod1"), { recursive: true });
  for (const d of [root, path.join(root, "kubepods"), path.join(root, "kubepods/pod1")]) {
    await writeFile(path.join(d, "cgroup.controllers"), "cpuset cpu io memory pids\n");
    await writeFile(path.join(d, "cgroup.subtree_control"), "");
  }
  const cg = PodCgroup.resolve(
    "/kubepods/pod1",
    "sb1",
    mountinfo([`40 30 0:37 / ${root} rw,relatime - cgroup2 cgroup2 rw`]),
  );
  assert.equal(cg.cgroup, "/kubepods/pod1/kuasar-vmm-sb1");
  assert.deepEqual(cg.procsFiles(), [path.join(root, "kubepods/pod1/kuasar-vmm-sb1/cgroup.procs")]);
  await cg.create();
  assert.equal(await readFile(path.join(root, "kubepods/cgroup.subtree_control"), "utf8"), "+cpu +memory +pids +io");
  const leaf = path.join(root, "kubepods/pod1/kuasar-vmm-sb1");
  await cg.update({ cpu: { shares: 1024, quota: 50000, period: 100000 }, memory: { limit: 536870912 } });
  assert.equal(await readFile(path.join(leaf, "cpu.max"), "utf8"), "50000 100000");
  assert.equal(await readFile(path.join(leaf, "cpu.weight"), "utf8"), "39");
  assert.equal(await readFile(path.join(leaf, "memory.max"), "utf8"), "536870912");
  await writeFile(path.join(leaf, "memory.current"), "1048576\n");
  await writeFile(path.join(leaf, "memory.stat"), "anon 4096\n");
  await writeFile(path.join(leaf, "memory.events"), "oom_kill 0\n");
  const stats = await cg.stats();
  assert.equal(stats.version, 2);
  assert.equal(stats.version === 2 && stats.memory?.current, 1048576n);
  await rm(leaf, { recursive: true });
  await cg.remove();
});

test("cgroup v1: a directory per accounted hierarchy; a new cpuset level takes its parent's cpus and mems", async () => {
  const root = path.join(tmp, "v1");
  const lines = [];
  for (const c of ["cpu", "cpuacct", "cpuset", "memory", "pids", "devices"]) {
    await mkdir(path.join(root, c), { recursive: true });
    lines.push(`3${lines.length} 30 0:2${lines.length} / ${root}/${c} rw,relatime - cgroup cgroup rw,${c}`);
  }
  await writeFile(path.join(root, "cpuset/cpuset.cpus"), "0-1\n");
  await writeFile(path.join(root, "cpuset/cpuset.mems"), "0\n");
  const cg = PodCgroup.resolve("/kuasar-test/pod2", "sb2", mountinfo(lines));
  const dirs = cg.procsFiles().map((f) => path.relative(root, path.dirname(f)));
  assert.deepEqual(
    dirs,
    ["cpu", "cpuacct", "cpuset", "memory", "pids"].map((c) => `${c}/kuasar-test/pod2/kuasar-vmm-sb2`),
  );
  // A real cpuset hierarchy creates these files empty in every new directory.
  const realMkdir = async () => {
    for (const d of ["kuasar-test", "kuasar-test/pod2", "kuasar-test/pod2/kuasar-vmm-sb2"]) {
      await mkdir(path.join(root, "cpuset", d), { recursive: true });
      for (const f of ["cpuset.cpus", "cpuset.mems"]) await writeFile(path.join(root, "cpuset", d, f), "");
    }
  };
  await realMkdir();
  await cg.create();
  const leaf = path.join(root, "cpuset/kuasar-test/pod2/kuasar-vmm-sb2");
  assert.equal(await readFile(path.join(leaf, "cpuset.cpus"), "utf8"), "0-1");
  assert.equal(await readFile(path.join(leaf, "cpuset.mems"), "utf8"), "0");
  await cg.update({ memory: { limit: 1 << 28 }, cpu: { shares: 256 } });
  assert.equal(
    await readFile(path.join(root, "memory/kuasar-test/pod2/kuasar-vmm-sb2/memory.limit_in_bytes"), "utf8"),
    "268435456",
  );
  assert.equal(await readFile(path.join(root, "cpu/kuasar-test/pod2/kuasar-vmm-sb2/cpu.shares"), "utf8"), "256");
});
