// Boots a guest kernel under QEMU (TCG: no usable KVM here) with a tiny busybox initramfs whose /init checks
// what the agent will need, prints one line and powers the VM off. Shared by the kernel boot test and the
// kernel profile benchmark.
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";

const QEMU = "qemu-system-x86_64";
const BUSYBOX = "/bin/busybox";
const MARKER = "KUASAR-KERNEL-BOOT-OK";
const BOOT_TIMEOUT_MS = 150_000;

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

/** Fails with the package to install when QEMU, busybox or cpio is missing. */
export async function checkBootTools(): Promise<void> {
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} is missing: apt-get install -y busybox-static`);
  if ((await execa(QEMU, ["--version"], { reject: false })).failed) {
    throw new Error(`${QEMU} is not installed: apt-get install -y qemu-system-x86`);
  }
  if ((await execa("cpio", ["--version"], { reject: false })).failed) {
    throw new Error("cpio is not installed: apt-get install -y cpio");
  }
}

/** Writes the check initramfs below dir and returns its path. */
export async function checkInitrd(dir: string): Promise<string> {
  const root = path.join(dir, "root");
  await mkdir(path.join(root, "bin"), { recursive: true });
  await copyFile(BUSYBOX, path.join(root, "bin/busybox"));
  await writeFile(path.join(root, "init"), INIT);
  await chmod(path.join(root, "init"), 0o755);
  const initrd = path.join(dir, "initrd.gz");
  // gzip on purpose: the kernel must unpack it with CONFIG_RD_GZIP.
  await execa("sh", ["-c", `find . | cpio -o -H newc --quiet | gzip -n > ${initrd}`], { cwd: root });
  return initrd;
}

export interface Boot {
  /** Serial console output. */
  out: string;
  /** From spawning QEMU until it exited (the guest powered off). */
  ms: number;
  /** From spawning QEMU until the check line appeared on the console, if it did. */
  initMs?: number;
}

/** Boots kernel (bzImage on machine pc, vmlinux.bin's PVH entry on q35) and waits for the guest to power off. */
export async function bootKernel(kernel: string, machine: "pc" | "q35", initrd: string, smp = 2): Promise<Boot> {
  const t0 = performance.now();
  const child = execa(
    QEMU,
    [
      ...["-machine", machine, "-accel", "tcg", "-m", "512", "-smp", String(smp)],
      ...["-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd],
      ...["-append", "console=ttyS0 panic=-1 no_timer_check rdinit=/init"],
    ],
    { all: true, reject: false, stdin: "ignore", timeout: BOOT_TIMEOUT_MS },
  );
  let initMs: number | undefined;
  let seen = "";
  child.all?.on("data", (d: Buffer) => {
    seen += d;
    if (initMs === undefined && seen.includes(MARKER)) initMs = performance.now() - t0;
  });
  const r = await child;
  const out = String(r.all ?? "");
  if (r.timedOut) throw new Error(`QEMU did not power off within 150 s; console:\n${out.slice(-3000)}`);
  return { out, ms: performance.now() - t0, ...(initMs === undefined ? {} : { initMs }) };
}

/** What the guest lacks, judged from its console; empty when it has all the agent needs. */
export function guestProblems(out: string): string[] {
  const line = out.split("\n").find((l) => l.includes(MARKER));
  if (!line) return [`the guest never reached /init; console:\n${out.slice(-3000)}`];
  const problems: string[] = [];
  if (!/vsock=yes/.test(line)) problems.push("/dev/vsock is missing (CONFIG_VSOCKETS)");
  for (const c of ["cpuset", "cpu", "memory", "pids"]) {
    if (!new RegExp(`controllers=.*\\b${c}\\b`).test(line)) problems.push(`cgroup v2 controller '${c}' is missing`);
  }
  // -no-reboot turns a panic into an exit too: only an ACPI power-off prints this.
  if (!/reboot: Power down/.test(out)) problems.push("reboot(RB_POWER_OFF) did not power the VM off");
  return problems;
}
