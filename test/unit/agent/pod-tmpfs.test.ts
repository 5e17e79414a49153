import assert from "node:assert/strict";
import { readFileSync, statfsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, test } from "node:test";
import { execa } from "execa";
import { ContainerManager } from "../../../runtime/agent/containers.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { ExitMonitor } from "../../../runtime/agent/exit-monitor.ts";
import { ensurePodTmpfs, podTmpfsBinds } from "../../../runtime/agent/pod-tmpfs.ts";
import { Runc } from "../../../runtime/agent/runc.ts";
import { prepareBundle } from "../../../runtime/agent/spec.ts";
import type { OciMount, OciSpec } from "../../../runtime/contract/oci.ts";
import * as h from "./harness.ts";

const shm: OciMount = {
  destination: "/dev/shm",
  type: "tmpfs",
  source: "kuasar-pod-tmpfs:shm",
  options: ["size=1048576", "nosuid", "nodev", "noexec"],
};
const cache = (size: number, ...flags: string[]): OciMount => ({
  destination: "/cache",
  type: "tmpfs",
  source: "kuasar-pod-tmpfs:empty-dir.cache",
  options: [`size=${size}`, ...flags],
});

/** Mount points at target in this mount namespace. */
const mountsAt = (target: string) =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.split(" ")[4] === target).length;

// Containers orphan processes through runc; init reaps them (see underInit).
if (await h.underInit(import.meta.url)) {
  test("pod tmpfs mounts become binds of the agent's tmpfs for their key; other mounts are kept", () => {
    const proc = { destination: "/proc", type: "proc", source: "proc" };
    const r = podTmpfsBinds([proc, shm, cache(4096, "ro"), cache(8192)], "/pod-tmpfs");
    assert.deepEqual(r.mounts, [
      proc,
      {
        destination: "/dev/shm",
        type: "bind",
        source: "/pod-tmpfs/shm",
        options: ["rbind", "nosuid", "nodev", "noexec"],
      },
      { destination: "/cache", type: "bind", source: "/pod-tmpfs/empty-dir.cache", options: ["rbind", "ro"] },
      { destination: "/cache", type: "bind", source: "/pod-tmpfs/empty-dir.cache", options: ["rbind"] },
    ]);
    assert.deepEqual(r.tmpfs, [
      { key: "shm", sizeBytes: 1048576, flags: ["nosuid", "nodev", "noexec"] },
      { key: "empty-dir.cache", sizeBytes: 4096, flags: ["ro"] },
    ]);
  });

  test("a key that would leave the agent's directory, or an option smuggled in, is refused (InvalidArgument)", () => {
    for (const m of [
      { ...shm, source: "kuasar-pod-tmpfs:../../etc" },
      { ...shm, source: "kuasar-pod-tmpfs:empty-dir.x/../../../root" },
      { ...shm, options: ["size=1,uid=0"] },
      { ...shm, options: ["size=1", "suid"] },
    ]) {
      assert.throws(
        () => podTmpfsBinds([m], "/pod-tmpfs"),
        (e: unknown) =>
          e instanceof TaskError && e.code === "InvalidArgument" && e.message.includes('mount "/dev/shm"'),
        JSON.stringify(m),
      );
    }
  });

  await h.requireTools();
  await h.addonsReady();
  const s = await h.scratch("podtmpfs");
  const dir = path.join(s.dir, "pod-tmpfs");
  const exits = ExitMonitor.fromInit();
  after(async () => {
    exits.close();
    for (const key of ["shm", "empty-dir.cache"]) await execa("umount", [path.join(dir, key)], { reject: false });
    await s.cleanup();
  });

  test("containers created at once get one tmpfs per key, with the size asked for", async () => {
    const t = { key: "empty-dir.cache", sizeBytes: 2 << 20, flags: [] };
    await Promise.all([ensurePodTmpfs(t, dir), ensurePodTmpfs(t, dir), ensurePodTmpfs({ ...t, sizeBytes: 4096 }, dir)]);
    const target = path.join(dir, "empty-dir.cache");
    assert.equal(mountsAt(target), 1);
    const fs = statfsSync(target);
    assert.equal(fs.type, 0x01021994, "a tmpfs");
    assert.equal(fs.blocks * fs.bsize, 2 << 20, "the first container's size");
  });

  test("the pod's containers share one /dev/shm and one memory emptyDir", { timeout: 120_000 }, async () => {
    const rootfs = await h.busyboxRootfs(s.dir);
    const lsm = { apparmor: false, selinux: false };
    const m = new ContainerManager({
      runc: new Runc({ root: s.runcRoot, logDir: `${s.dir}/logs` }),
      exits,
      stateDir: `${s.dir}/state`,
      lsm,
      prepareBundle: (source, target) => prepareBundle(source, target, { lsm, podTmpfsDir: dir }),
    });
    const run = async (id: string, script: string) => {
      const b = await h.writeBundle(s.dir, rootfs, id, { args: ["sh", "-c", script], cgroupParent: s.cgroupParent });
      const file = path.join(b, "config.json");
      const spec = JSON.parse(await readFile(file, "utf8")) as OciSpec;
      spec.mounts = [...(spec.mounts ?? []), shm, cache(2 << 20)];
      await writeFile(file, JSON.stringify(spec));
      await m.create(id, b, { stdout: "o" });
      const out = h.collect(m.process(id).stdio.stdout);
      await m.start(id);
      assert.equal((await m.wait(id)).exitStatus, 0);
      await out.ended;
      await m.delete(id);
      return out.text();
    };
    await run("writer", "echo from-writer > /dev/shm/seg; echo cached > /cache/file");
    const out = await run("reader", "cat /dev/shm/seg /cache/file; grep -E ' /(dev/shm|cache) ' /proc/mounts");
    assert.match(out, /^from-writer\ncached\n/);
    assert.match(out, /^shm \/dev\/shm tmpfs rw,nosuid,nodev,noexec,.*size=1024k/m);
    assert.match(out, /^tmpfs \/cache tmpfs rw,nosuid,nodev,.*size=2048k/m);
  });
}
