import { constants } from "node:fs";
import { access, open, readdir, readFile, stat } from "node:fs/promises";
import os from "node:os";
import { execa } from "execa";
import { IMAGE_HEAD_BYTES, type ImageLayout, imageLayout } from "../../contract/image-layout.ts";

/**
 * What the drivers ask of the host. Probes are injected so the decisions built on them (kvm or tcg, vhost or hybrid
 * vsock, which virtiofsd dialect) are testable without the hardware.
 */
export interface HostProbes {
  /** Opens the path read-write and closes it again; the error says why it cannot be. */
  openRw(path: string): Promise<{ ok: true } | { ok: false; error: string }>;
  exists(path: string): Promise<boolean>;
  /** Loaded kernel modules (from /proc/modules, else /sys/module). */
  modules(): Promise<Set<string>>;
  hostMemMiB(): number;
  /** `<path> --help` output (stdout and stderr), for telling virtiofsd implementations apart. */
  helpText(path: string): Promise<string>;
  fileSize(path: string): Promise<number>;
  /** The first bytes of a file (fewer if it is shorter). */
  readHead(path: string, bytes: number): Promise<Buffer>;
  isBlockDevice(path: string): Promise<boolean>;
  /** Is the path an executable file. */
  executable(path: string): Promise<boolean>;
}

export const realProbes: HostProbes = {
  async openRw(path) {
    try {
      const fh = await open(path, constants.O_RDWR);
      await fh.close();
      return { ok: true };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  },
  exists: (path) =>
    stat(path).then(
      () => true,
      () => false,
    ),
  async modules() {
    const text = await readFile("/proc/modules", "utf8").catch(() => undefined);
    if (text !== undefined)
      return new Set(
        text
          .split("\n")
          .map((l) => l.split(" ")[0]!)
          .filter(Boolean),
      );
    // Some containers hide /proc/modules; /sys/module lists loaded modules (and built-in ones with parameters).
    return new Set(await readdir("/sys/module").catch(() => []));
  },
  hostMemMiB: () => Math.floor(os.totalmem() / 1048576),
  async helpText(path) {
    const r = await execa(path, ["--help"], { reject: false, timeout: 5000, all: true, stdin: "ignore" });
    return String(r.all ?? "");
  },
  fileSize: async (path) => (await stat(path)).size,
  async readHead(path, bytes) {
    const fh = await open(path, "r");
    try {
      const buf = Buffer.alloc(bytes);
      const { bytesRead } = await fh.read(buf, 0, bytes, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  },
  isBlockDevice: async (path) => (await stat(path)).isBlockDevice(),
  executable: (path) =>
    access(path, constants.X_OK).then(
      () => true,
      () => false,
    ),
};

export type Accel = "kvm" | "tcg";
export interface Choice<T> {
  value: T;
  reason: string;
}

/**
 * kvm only where ordinary guests run under it: /dev/kvm must open read-write AND the hardware module (kvm_intel or
 * kvm_amd) must be loaded. A /dev/kvm from another provider (e.g. a nested "PVM" module) accepts the ioctls but
 * ordinary guest kernels hang under it, so it does not count.
 */
export async function chooseAccelerator(wanted: "auto" | Accel, probes: HostProbes): Promise<Choice<Accel>> {
  const dev = await probes.openRw("/dev/kvm");
  if (wanted === "tcg") return { value: "tcg", reason: "machine_accelerators asks for tcg" };
  if (wanted === "kvm") {
    if (!dev.ok) {
      throw new Error(
        `hypervisor.machine_accelerators = "kvm" but /dev/kvm cannot be opened (${dev.error}): load kvm_intel/kvm_amd or use "auto"`,
      );
    }
    return { value: "kvm", reason: "machine_accelerators asks for kvm" };
  }
  if (!dev.ok) return { value: "tcg", reason: `/dev/kvm cannot be opened (${dev.error})` };
  const mods = await probes.modules();
  const hw = ["kvm_intel", "kvm_amd"].filter((m) => mods.has(m));
  if (hw.length === 0) {
    const others = [...mods].filter((m) => m.startsWith("kvm")).sort();
    return {
      value: "tcg",
      reason: `/dev/kvm opens but neither kvm_intel nor kvm_amd is loaded (kvm modules: ${others.join(", ") || "none"}); guests may hang under it`,
    };
  }
  return { value: "kvm", reason: `/dev/kvm opens and ${hw.join(", ")} is loaded` };
}

export type VirtiofsdDialect = "c" | "rust";

/** How image_path is laid out (partition 1? fsdax info block?), for the root device; undefined without an image. */
export async function imageLayoutOf(image: string, probes: HostProbes): Promise<ImageLayout | undefined> {
  return image ? imageLayout(await probes.readHead(image, IMAGE_HEAD_BYTES)) : undefined;
}

/** QEMU's C virtiofsd takes `-o source=`; the Rust one takes `--shared-dir`. */
export async function virtiofsdDialect(path: string, probes: HostProbes): Promise<VirtiofsdDialect> {
  const help = await probes.helpText(path);
  if (help.includes("--shared-dir")) return "rust";
  if (help.includes("source=")) return "c";
  throw new Error(
    `${path} does not look like virtiofsd (its --help mentions neither --shared-dir nor -o source=): ` +
      "fix hypervisor.virtiofsd.path",
  );
}
