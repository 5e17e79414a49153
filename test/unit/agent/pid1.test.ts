import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { execa } from "execa";
import { ensureMount, mountPoints, Pid1Error } from "../../../runtime/agent/mounts.ts";
import { addonsReady, repo } from "./harness.ts";

test("PID 1 mounts are made once, /run keeps the share's mount point, /etc files are the pod's copies of the share's", {
  timeout: 60_000,
}, async () => {
  await addonsReady();
  const root = await mkdtemp(path.join(os.tmpdir(), "kuasar-pid1-"));
  try {
    await mkdir(path.join(root, "etc"));
    await mkdir(path.join(root, "dev"));
    // Private mount and uts namespaces: nothing here touches the host's mounts or hostname.
    const r = await execa(
      "unshare",
      [
        "--mount",
        "--uts",
        "--propagation",
        "private",
        process.execPath,
        "--import",
        "tsx",
        "test/unit/agent/fixtures/pid1-steps.ts",
        root,
      ],
      { cwd: repo, reject: false, all: true, timeout: 45_000 },
    );
    assert.equal(r.exitCode, 0, r.all);
    const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "");
    assert.deepEqual(out.first, { proc: true, sysfs: true, run: true, shm: true, pts: true });
    assert.deepEqual(out.again, { proc: false, sysfs: false, run: false, shm: false, pts: false });
    assert.deepEqual(out.types, {
      "/proc": "proc",
      "/sys": "sysfs",
      "/run": "tmpfs",
      "/dev/shm": "tmpfs",
      "/dev/pts": "devpts",
      "/etc/hosts": "tmpfs",
    });
    assert.equal(out.shareIsDir, true);
    assert.equal(out.ptmx, "pts/ptmx");
    assert.equal(out.ptmxMode, "666");
    assert.deepEqual(out.bound, ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]);
    assert.deepEqual(out.boundAgain, []);
    assert.equal(out.etcHosts, "127.0.0.1 pod\n10.0.0.9 added\n");
    assert.equal(out.podHosts, out.etcHosts, "/etc/hosts is the pod's writable copy");
    assert.equal(out.shareHosts, "127.0.0.1 pod\n", "the share's file is left as the host wrote it");
    assert.equal(out.etcResolv, "nameserver 10.0.0.1\n");
    assert.equal(out.hostname, "pod-host");
    assert.equal(out.kernelHostname, "pod-host");
    assert.equal(out.initramfs, false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("a mount the kernel refuses fails naming the file system, the target, the options and the errno", async () => {
  await addonsReady();
  const target = await mkdtemp(path.join(os.tmpdir(), "kuasar-pid1-"));
  try {
    assert.throws(
      () => ensureMount({ source: "x", target, type: "nosuchfs", options: ["nosuid", "size=1"], hint: "a hint" }),
      (e: Error) =>
        e instanceof Pid1Error &&
        e.message.includes(`mounting nosuchfs on ${target} failed (options nosuid,size=1)`) &&
        e.message.includes("ENODEV") &&
        e.message.endsWith("; a hint"),
    );
    assert.equal(mountPoints().has(target), false);
  } finally {
    await rm(target, { recursive: true, force: true });
  }
});
