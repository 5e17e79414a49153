import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { logger } from "../../../../runtime/log/log.ts";
import { defaultConfig } from "../../../../runtime/sandboxer/config/schema.ts";
import { EventPublisher } from "../../../../runtime/sandboxer/events.ts";
import { VmLauncher } from "../../../../runtime/sandboxer/sandbox/launcher.ts";
import type { SandboxRecord } from "../../../../runtime/sandboxer/sandbox/record.ts";

const root = await mkdtemp(path.join(os.tmpdir(), "launcher-"));
after(() => rm(root, { recursive: true, force: true }));

const log = logger("test");
const launcher = new VmLauncher(
  defaultConfig("qemu"),
  new EventPublisher(path.join(root, "no-containerd.sock"), log),
  log,
);

/** A running sandbox's record as sandbox.json holds it after a daemon restart. */
async function sandbox(id: string, runtime: unknown): Promise<{ rec: SandboxRecord; dir: string }> {
  const dir = path.join(root, id);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  const rec: SandboxRecord = {
    id,
    state: "running",
    createdAt: new Date().toISOString(),
    netnsPath: `/var/run/netns/${id}`,
    annotations: {},
    labels: {},
    nextStorage: 0,
    pid: 1,
    ...(runtime === undefined ? {} : { runtime }),
  };
  return { rec, dir };
}

/** A stand-in VMM: a process whose command line points into the sandbox directory, named by its pid file. */
async function fakeVmm(dir: string) {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", path.join(dir, "console.sock")], {
    stdio: "ignore",
  });
  await once(child, "spawn");
  await writeFile(path.join(dir, "vmm.pid"), `${child.pid}\n`);
  return child;
}

/**
 * The signal that ended `child`: SIGKILL when it was already killed, else the SIGTERM sent here (once a process is
 * being killed, further signals are dropped), so a VMM left running fails the test instead of hanging it.
 */
async function killedBefore(child: ChildProcess): Promise<NodeJS.Signals | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.signalCode;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const [, signal] = await exited;
  return signal;
}

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

test("recovery refuses a sandbox.json whose runtime state is corrupt, naming the field, and kills the VMM it left", async (t) => {
  const { rec, dir } = await sandbox("corrupt", { vm: { kind: "firecracker" }, agent: {}, nics: [] });
  const vmm = await fakeVmm(dir);
  t.after(() => vmm.kill("SIGKILL"));
  const r = await launcher.recover(rec, dir);
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.reason : "", /sandbox corrupt: .*runtime\.vm\.kind is "firecracker"/);
  assert.equal(await killedBefore(vmm), "SIGKILL");
});

test("recovery of a running sandbox whose sandbox.json has no runtime state kills the VMM it left", async (t) => {
  const { rec, dir } = await sandbox("no-state", undefined);
  const vmm = await fakeVmm(dir);
  t.after(() => vmm.kill("SIGKILL"));
  const r = await launcher.recover(rec, dir);
  assert.deepEqual(r, { ok: false, reason: "sandbox.json has no VM state" });
  assert.equal(await killedBefore(vmm), "SIGKILL");
});

test("release frees what it can of a sandbox whose runtime state is corrupt, then names the field", async () => {
  const { rec, dir } = await sandbox("release-corrupt", { vm: {}, agent: {} });
  await writeFile(path.join(dir, "task.sock"), "");
  await assert.rejects(
    launcher.release(rec, dir),
    /sandbox release-corrupt: .*runtime\.vm\.kind is missing.*; any taps it made in \/var\/run\/netns\/release-corrupt are left there/,
  );
  assert.equal(await exists(path.join(dir, "task.sock")), false);
});

test("release of a sandbox that never started (no runtime state) frees its task socket", async () => {
  const { rec, dir } = await sandbox("release-created", undefined);
  await writeFile(path.join(dir, "task.sock"), "");
  await launcher.release({ ...rec, state: "created" }, dir);
  assert.equal(await exists(path.join(dir, "task.sock")), false);
});
