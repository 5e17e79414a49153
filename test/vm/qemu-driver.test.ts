import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { logger, setLogLevel } from "../../runtime/log/log.ts";
import { parseConfig } from "../../runtime/sandboxer/config/load.ts";
import type { Config } from "../../runtime/sandboxer/config/schema.ts";
import { procStartTime } from "../../runtime/sandboxer/hypervisor/process.ts";
import { createHypervisor, defaultEnv, recoverHypervisor } from "../../runtime/sandboxer/hypervisor/registry.ts";
import type { DriverEnv, Hypervisor } from "../../runtime/sandboxer/hypervisor/vm-api.ts";
import { artifact } from "../../testkit/daemon.ts";

// Boots the pipeline's guest (bin/vmlinux.bin or bin/bzImage + bin/kuasar.img) through the QEMU driver with the
// shipped defaults: accelerator auto (tcg where KVM does not work), hybrid vsock unless /dev/vhost-vsock exists,
// 9p share. Talking to the agent is tested elsewhere; this checks the VMM's lifecycle.
const repo = path.resolve(import.meta.dirname, "../..");
const image = path.join(repo, "bin/kuasar.img");
const kernel = [artifact("vmlinux.bin"), artifact("bzImage")].find(existsSync);
const BOOT_MS = 180_000;

setLogLevel("warn");
const env: DriverEnv = { ...defaultEnv(logger("qemu-driver-test")), pollMs: 100 };
let tmp: string;
let config: Config;

before(async () => {
  if (!kernel || !existsSync(image)) {
    assert.fail(
      `the guest is not built (${kernel ? image : "bin/vmlinux.bin"} is missing): run make bin/vmlinux.bin bin/kuasar.img`,
    );
  }
  const qemu = await execa("qemu-system-x86_64", ["--version"], { reject: false });
  if (qemu.failed) assert.fail("qemu-system-x86_64 is not installed: apt-get install -y qemu-system-x86");
  const text = await readFile(path.join(repo, "installers/config/config_qemu_x86_64.toml"), "utf8");
  config = parseConfig(text, "config_qemu_x86_64.toml").config;
  config.hypervisor.kernel_path = kernel;
  config.hypervisor.image_path = image;
  if (!existsSync("/dev/vhost-vsock") && !existsSync(config.hypervisor.vhost_user_vsock_path)) {
    assert.fail(
      `${config.hypervisor.vhost_user_vsock_path} is missing: install vhost-device-vsock (see scripts/install-prereqs.sh)`,
    );
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), "qemu-driver-"));
});
after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** A VM from the installed config; disk: the image as a virtio-blk disk instead of its default NVDIMM. */
async function newVm(id: string, opts: { disk?: boolean } = {}): Promise<Hypervisor> {
  const dir = path.join(tmp, id);
  await mkdir(path.join(dir, "shared"), { recursive: true });
  const c = opts.disk ? { ...config, hypervisor: { ...config.hypervisor, disable_nvdimm: true } } : config;
  return createHypervisor(c, { id, dir, shareDir: path.join(dir, "shared"), netDevices: [] }, env);
}

/** Polls the console log until it matches, failing with its tail. */
async function console(file: string, re: RegExp, ms: number): Promise<string> {
  const deadline = Date.now() + ms;
  let text = "";
  while (Date.now() < deadline) {
    text = await readFile(file, "utf8").catch(() => "");
    if (re.test(text)) return text;
    await sleep(250);
  }
  assert.fail(`console never showed ${re} within ${ms / 1000} s; it ends with:\n${text.slice(-3000)}`);
}

async function running(pid: number): Promise<boolean> {
  return (await procStartTime(pid)) !== undefined;
}

describe("QEMU driver boots the built guest", { timeout: 2 * BOOT_MS }, () => {
  test("start from the image as a disk (vda1), kernel reaches init, QMP says running, stop() ends QEMU and helpers", async () => {
    const vm = await newVm("boot", { disk: true });
    const started = await vm.start();
    const state = vm.persistState();
    try {
      assert.ok(started.pid > 0, "the real QEMU pid is reported");
      assert.equal(await readFile(path.join(state.dir, "vmm.pid"), "utf8"), `${started.pid}\n`);
      const text = await console(started.consoleLog, /Run \/sbin\/init as init process/, BOOT_MS);
      assert.match(text, /Linux version \d+\.\d+/);
      assert.match(text, /Kernel command line: .*root=\/dev\/vda1 ro .*task\.sharefs_type=9p/);
      assert.deepEqual(await vm.status(), { state: "running", detail: "running" });
      if (started.agentAddress.kind === "hvsock") {
        assert.ok(existsSync(started.agentAddress.udsPath), "hybrid vsock socket is there for the daemon to dial");
      }
    } catch (err) {
      await vm.stop(0);
      throw err;
    }
    const exit = await vm.stop(3000);
    assert.deepEqual(await vm.wait(), exit);
    assert.equal(exit.exitStatus, 0, "QEMU quit cleanly");
    assert.equal(await running(started.pid), false);
    for (const h of state.helpers)
      assert.equal(await running(h.pid), false, `${h.name} (pid ${h.pid}) is still running`);
    for (const f of ["qmp.sock", "vmm.pid", "vhost-vsock.sock", "task.vsock"]) {
      assert.equal(existsSync(path.join(state.dir, f)), false, `${f} was left behind`);
    }
    assert.equal((await vm.status()).state, "exited");
  });

  test("after a daemon restart the VM is recovered; kill -9 of QEMU ends wait() and cleans the helpers", async () => {
    const vm = await newVm("killed");
    const started = await vm.start();
    const state = vm.persistState();
    // The daemon goes away: its QMP connection closes, the VM keeps running.
    vm.detach();
    const again = await recoverHypervisor(state, env);
    try {
      assert.equal((await again.status()).state, "running");
    } catch (err) {
      await again.stop(0);
      throw err;
    }
    const waited = again.wait();
    process.kill(started.pid, "SIGKILL");
    const exit = await waited;
    // Not our child any more: the status is unknown; our original handle still saw the signal.
    assert.equal(exit.exitStatus, 255);
    // VMM children are unref'd (they must not hold a daemon open); in a test nothing else holds the loop.
    const hold = setInterval(() => {}, 1000);
    try {
      assert.equal((await vm.wait()).exitStatus, 128 + 9);
    } finally {
      clearInterval(hold);
    }
    for (const h of state.helpers)
      assert.equal(await running(h.pid), false, `${h.name} (pid ${h.pid}) is still running`);
  });
});
