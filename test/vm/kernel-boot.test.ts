import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { execa } from "execa";

// Boots the built guest kernel under QEMU (TCG: no usable KVM here) with a tiny busybox initramfs whose
// /init checks what the agent will need, prints a marker and powers the VM off.
const repo = path.resolve(import.meta.dirname, "../..");
const bzImage = path.join(repo, "bin/bzImage");
const vmlinux = path.join(repo, "bin/vmlinux.bin");
const QEMU = "qemu-system-x86_64";
const BUSYBOX = "/bin/busybox";
const MARKER = "KUASAR-KERNEL-BOOT-OK";

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
vsock=no; [ -c /dev/vsock ] && vsock=yes
echo "${MARKER} vsock=$vsock controllers=$(cat /sys/fs/cgroup/cgroup.controllers) kernel=$(uname -r)"
poweroff -f
`;

let tmp: string;
let initrd: string;

function requireFile(file: string, what: string): void {
  if (!existsSync(file)) assert.fail(`${file} is missing: ${what}`);
}

before(async () => {
  requireFile(bzImage, "build the guest kernel first with `make bin/vmlinux.bin`");
  requireFile(vmlinux, "build the guest kernel first with `make bin/vmlinux.bin`");
  requireFile(BUSYBOX, "install it with: apt-get install -y busybox-static");
  const qemu = await execa(QEMU, ["--version"], { reject: false });
  if (qemu.failed) assert.fail(`${QEMU} is not installed: apt-get install -y qemu-system-x86`);
  const cpio = await execa("cpio", ["--version"], { reject: false });
  if (cpio.failed) assert.fail("cpio is not installed: apt-get install -y cpio");

  tmp = await mkdtemp(path.join(os.tmpdir(), "kernel-boot-"));
  const root = path.join(tmp, "root");
  await mkdir(path.join(root, "bin"), { recursive: true });
  await copyFile(BUSYBOX, path.join(root, "bin/busybox"));
  await writeFile(path.join(root, "init"), INIT);
  await chmod(path.join(root, "init"), 0o755);
  initrd = path.join(tmp, "initrd.gz");
  // gzip on purpose: the kernel must unpack it with CONFIG_RD_GZIP.
  await execa("sh", ["-c", `find . | cpio -o -H newc --quiet | gzip -n > ${initrd}`], { cwd: root });
});
after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function boot(kernel: string, machine: string): Promise<string> {
  const r = await execa(
    QEMU,
    [
      ...["-machine", machine, "-accel", "tcg", "-m", "512", "-smp", "2"],
      ...["-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd],
      ...["-append", "console=ttyS0 panic=-1 rdinit=/init"],
    ],
    { all: true, reject: false, stdin: "ignore", timeout: 150_000 },
  );
  const out = String(r.all ?? "");
  assert.equal(r.timedOut, false, `QEMU did not power off within 150 s; console:\n${out.slice(-3000)}`);
  return out;
}

function checkGuest(out: string): void {
  const line = out.split("\n").find((l) => l.includes(MARKER));
  assert.ok(line, `the guest never reached /init; console:\n${out.slice(-3000)}`);
  assert.match(line, /vsock=yes/, "/dev/vsock is missing (CONFIG_VSOCKETS)");
  for (const c of ["cpuset", "cpu", "memory", "pids"]) {
    assert.match(line, new RegExp(`controllers=.*\\b${c}\\b`), `cgroup v2 controller '${c}' is missing`);
  }
  // -no-reboot turns a panic into an exit too: only an ACPI power-off prints this.
  assert.match(out, /reboot: Power down/, "reboot(RB_POWER_OFF) did not power the VM off");
}

describe("guest kernel boots under QEMU", { timeout: 400_000 }, () => {
  test("bzImage stays within 4 MiB", async () => {
    const size = (await stat(bzImage)).size;
    assert.ok(size <= 4 * 1024 * 1024, `bzImage is ${size} bytes`);
  });

  test("bzImage (Linux boot protocol) on machine pc reaches init and powers off", async () => {
    checkGuest(await boot(bzImage, "pc"));
  });

  test("uncompressed vmlinux.bin (PVH entry) on machine q35 reaches init and powers off", async () => {
    checkGuest(await boot(vmlinux, "q35"));
  });
});
