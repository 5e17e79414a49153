import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { artifact } from "../../testkit/daemon.ts";
import { bootKernel, checkBootTools, checkInitrd, guestProblems } from "../../testkit/kernel-check.ts";

// Boots the built guest kernel (bin/, or KUASAR_KERNEL_DIR) with a check initramfs: it must reach /init with
// vsock and the cgroup v2 controllers, and power off.
const bzImage = artifact("bzImage");
const vmlinux = artifact("vmlinux.bin");
const manifest = artifact("vmlinux.manifest.json");

let tmp: string;
let initrd: string;

before(async () => {
  for (const f of [bzImage, vmlinux, manifest]) {
    if (!existsSync(f)) assert.fail(`${f} is missing: build the guest kernel first with \`make bin/vmlinux.bin\``);
  }
  await checkBootTools();
  tmp = await mkdtemp(path.join(os.tmpdir(), "kernel-boot-"));
  initrd = await checkInitrd(tmp);
});
after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("guest kernel boots under QEMU", { timeout: 400_000 }, () => {
  const profile = existsSync(manifest)
    ? (JSON.parse(readFileSync(manifest, "utf8")) as { profile: string }).profile
    : "unknown";

  // The 4 MiB target is the micro profile's; mini is x86_64_defconfig-sized by design.
  test("a micro bzImage stays within 4 MiB", { skip: profile !== "micro" && `profile ${profile}` }, async () => {
    const size = (await stat(bzImage)).size;
    assert.ok(size <= 4 * 1024 * 1024, `bzImage is ${size} bytes`);
  });

  test("bzImage (Linux boot protocol) on machine pc reaches init and powers off", async () => {
    assert.deepEqual(guestProblems((await bootKernel(bzImage, "pc", initrd)).out), []);
  });

  test("uncompressed vmlinux.bin (PVH entry) on machine q35 reaches init and powers off", async () => {
    assert.deepEqual(guestProblems((await bootKernel(vmlinux, "q35", initrd)).out), []);
  });
});
