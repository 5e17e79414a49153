/** The keys only QEMU reads, its defaults for the shared ones, and the rules between its keys. */
import type { CommonDefaults } from "../../config/common-tables.ts";
import { absolute, absoluteOrEmpty, bool, int, oneOf, str, strList } from "../../config/schema-lang.ts";
import type { ConfigWith, VmmKeys } from "../../config/vmm-keys.ts";
import { checkHelperRange, rangeProblems } from "../helper-uid.ts";
import { acceleratorWords } from "./accelerator.ts";

export const QEMU_KEYS = {
  sandbox: {
    helper_uid_base: int(
      "First uid (and gid) of the range the vsock helper (vhost-device-vsock, which parses the guest's virtqueues) " +
        "runs under: each running sandbox gets one of its own, with no capabilities, no supplementary groups and " +
        "no_new_privs. 0 runs the helper as root. Otherwise at least 65536 (above the host's own users); no user, " +
        "group or subordinate range in /etc/passwd, /etc/group, /etc/subuid or /etc/subgid may fall in the range " +
        "(the daemon refuses to start). See docs/privileges.md (kuasar-vmm addition).",
      2_000_000_000,
      0,
      2_147_483_647,
    ),
    helper_uid_count: int(
      "How many uids from helper_uid_base on are used: at least the most sandboxes this host runs at once " +
        "(kuasar-vmm addition).",
      65536,
      1,
      65536,
    ),
  },
  hypervisor: {
    qemu_path: str("QEMU binary.", "/usr/bin/qemu-system-x86_64", { check: absolute, after: "path" }),
    machine_accelerators: str(
      'Accelerator: "auto" (kvm where it works, else tcg; the choice is logged), "kvm" or "tcg". Other ' +
        "comma-separated words are passed on as -machine options, as Kuasar does.",
      "auto",
      { after: "machine_type" },
    ),
    cpu_model: str('-cpu model; "host" needs kvm, so tcg uses "max" instead.', "host"),
    cpu_features: str("Comma-separated CPU features appended to -cpu.", ""),
    tcg_tb_size_mb: int(
      "Translation cache of a TCG guest in MiB (-accel tcg,tb-size=; kuasar-vmm addition): QEMU's default lets it grow to 1 GiB per VM. " +
        "A pod's boot translates about 84 MiB of guest code, and a smaller cache is flushed and retranslated while the agent starts. 0 keeps QEMU's default; unused under kvm. " +
        "Under tcg a VM that can hot-add vCPUs (default_max_vcpus above vcpus) runs single-threaded TCG, since QEMU's " +
        "multi-threaded TCG aborts on a hot-add once its cache regions are taken; default_max_vcpus = vcpus keeps it multi-threaded.",
      128,
      0,
      4096,
    ),
    firmware_path: str("-bios firmware image; empty for QEMU's default.", "", { check: absoluteOrEmpty }),
    default_bridges: int("PCI bridges (pc) or PCIe root ports (q35) for hot-plugged disks.", 1, 0, 5),
    default_max_vcpus: int(
      "Maximum vCPUs (-smp maxcpus), up to which Update hot-plugs vCPUs; 0 means the host's CPUs.",
      0,
      0,
      255,
    ),
    mem_slots: int(
      "Memory hotplug slots (-m slots=, maxmem = host memory): each memory increase on Update takes one, the NVDIMM one; 0 turns memory hotplug off.",
      8,
      0,
      255,
    ),
    mem_offset: int("Kata's NVDIMM memory offset.", 0, 0, 2 ** 31, {
      ignored: "kuasar-vmm sizes the rootfs NVDIMM from the image file",
    }),
    memory_path: str("File or hugetlbfs mount backing guest memory; empty for anonymous memory.", "", {
      check: absoluteOrEmpty,
    }),
    file_backend_mem_path: str("Kata's memory backend for virtio-fs DAX.", "", {
      ignored: "virtio-fs DAX is not used; set memory_path for a file-backed guest memory",
    }),
    mem_prealloc: bool("Preallocate guest memory (prealloc=on).", false),
    enable_vhost_user_store: bool("Share guest memory for vhost-user block devices; needs hugepages.", false),
    enable_swap: bool("Kata's guest memory swap.", false, {
      ignored: "guest memory is never locked, so the host may swap it anyway",
    }),
    enable_iothreads: bool("Serve the rootfs disk from a dedicated QEMU I/O thread.", false),
    disable_nvdimm: bool(
      "false (Kata's default; Kuasar's is true): attach image_path as a read-only NVDIMM, mounted with DAX when the image carries an NVDIMM info block as kuasar.img does, so every guest maps its files from the host's page cache of the one image instead of copying them into its own RAM. true: a virtio-blk disk. Left unset, microvm and mem_slots = 0 use the disk.",
      false,
      {
        after: "block_device_driver",
      },
    ),
    share_fs: oneOf(
      "How <dir>/<id>/shared reaches the guest: Virtio9P (QEMU's own 9p server) or VirtioFS (virtiofsd helper).",
      ["Virtio9P", "VirtioFS"],
      "Virtio9P",
      { aliases: { "virtio-9p": "Virtio9P", "virtio-fs": "VirtioFS" } },
    ),
    msize_9p: int("Kata's 9p msize.", 8192, 4096, 1048576, {
      ignored: "the guest agent mounts the 9p share with the kernel's default msize",
    }),
    virtio_9p_direct_io: bool("Write 9p data through to the host immediately (-fsdev writeout=immediate).", false),
    virtio_9p_multidevs: oneOf(
      "-fsdev multidevs= for shares spanning several host filesystems: remap, forbid or warn; empty for QEMU's default.",
      ["", "remap", "forbid", "warn"],
      "",
    ),
    use_vsock: bool("Talk to the guest agent over vsock. Must stay true: vmm-task listens only on vsock.", true),
    vsock_mode: oneOf(
      'vsock transport: "vhost" (/dev/vhost-vsock), "hybrid" (vhost-device-vsock, a UDS on the host) or "auto" ' +
        "(vhost where /dev/vhost-vsock exists; the choice is logged).",
      ["auto", "vhost", "hybrid"],
      "auto",
    ),
    vhost_user_vsock_path: str("vhost-device-vsock binary for hybrid vsock.", "/usr/bin/vhost-device-vsock", {
      check: absolute,
    }),
    virtiofs_daemon_path: str("Kuasar's older name for [hypervisor.virtiofsd] path.", "", {
      deprecatedFor: "hypervisor.virtiofsd.path",
    }),
    virtiofs_cache: str("Kuasar's older name for [hypervisor.virtiofsd] cache.", "", {
      deprecatedFor: "hypervisor.virtiofsd.cache",
    }),
    virtiofs_extra_args: strList("Extra virtiofsd arguments, appended after the generated ones.", []),
    virtiofs_cache_size: int("Kata's virtio-fs DAX window in MiB.", 0, 0, 1048576, {
      ignored: "QEMU 7.2's vhost-user-fs-pci has no DAX window",
    }),
  },
  tables: {},
} satisfies VmmKeys;

export type QemuConfig = ConfigWith<typeof QEMU_KEYS>;

/** The shared keys and tables QEMU reads. */
export const QEMU_USES = ["hypervisor.machine_type", "hypervisor.block_device_driver", "hypervisor.virtiofsd"];

export const QEMU_DEFAULTS: CommonDefaults = {
  hypervisor: { memory_in_mb: 512 },
  "hypervisor.virtiofsd": { path: "/usr/lib/qemu/virtiofsd", syslog: false },
};

const QEMU_MACHINE = /^(pc|q35|microvm|pc-i440fx-[\d.]+|pc-q35-[\d.]+)$/;

/** Rules between QEMU's keys; `set` tells the keys the file set from defaults, which give way to them. */
export function crossCheckQemu(config: QemuConfig, set: (key: string) => boolean, problems: string[]): void {
  const h = config.hypervisor;
  problems.push(...rangeProblems({ base: config.sandbox.helper_uid_base, count: config.sandbox.helper_uid_count }));
  if (set("path")) {
    if (!set("qemu_path")) h.qemu_path = h.path;
    else if (h.path !== h.qemu_path) {
      problems.push(
        `hypervisor.path = ${JSON.stringify(h.path)} and hypervisor.qemu_path = ${JSON.stringify(h.qemu_path)} differ: keep qemu_path`,
      );
    }
  }
  if (h.firmware !== "" && h.firmware_path !== "" && h.firmware !== h.firmware_path) {
    problems.push("hypervisor.firmware and hypervisor.firmware_path differ: keep firmware_path");
  }
  if (!QEMU_MACHINE.test(h.machine_type)) {
    problems.push(
      `hypervisor.machine_type: expected pc, q35, microvm, pc-i440fx-<version> or pc-q35-<version>, found ${JSON.stringify(h.machine_type)}`,
    );
  }
  const micro = h.machine_type === "microvm";
  if (micro !== (h.block_device_driver === "VirtioMmio")) {
    problems.push(
      `hypervisor.block_device_driver = "${h.block_device_driver}" does not fit machine_type = "${h.machine_type}": ` +
        "microvm has only virtio-mmio (VirtioMmio), the other machines use VirtioBlk or VirtioScsi",
    );
  }
  // The NVDIMM default gives way where it cannot be: microvm has none, and it needs a memory slot.
  if (!set("disable_nvdimm") && (micro || h.mem_slots === 0)) h.disable_nvdimm = true;
  if (micro && !h.disable_nvdimm) {
    problems.push("hypervisor.disable_nvdimm = false: microvm has no NVDIMM; set it to true");
  }
  if (!h.disable_nvdimm && h.mem_slots === 0) {
    problems.push("hypervisor.disable_nvdimm = false needs mem_slots > 0: the NVDIMM occupies a memory slot");
  }
  const accel = acceleratorWords(h.machine_accelerators);
  if (accel.length > 1) {
    problems.push(
      `hypervisor.machine_accelerators = ${JSON.stringify(h.machine_accelerators)} names ${accel.join(" and ")}: keep one of auto, kvm, tcg`,
    );
  }
  if (h.cpu_model === "") problems.push('hypervisor.cpu_model is empty: use "host" (tcg falls back to "max")');
  if (!h.use_vsock) {
    problems.push("hypervisor.use_vsock = false is not supported: the guest agent (vmm-task) listens only on vsock");
  }
  if (h.enable_vhost_user_store && !h.hugepages && h.memory_path === "") {
    problems.push("hypervisor.enable_vhost_user_store needs hugepages = true (or a memory_path on hugetlbfs)");
  }
  if (h.default_max_vcpus !== 0 && h.default_max_vcpus < h.vcpus) {
    problems.push(`hypervisor.default_max_vcpus = ${h.default_max_vcpus} is below vcpus = ${h.vcpus}`);
  }
}

/** The helper uid range must not take ids of the host's users, groups or subordinate ranges (in etcDir). */
export function checkQemuHost(config: QemuConfig, etcDir: string): Promise<string[]> {
  return checkHelperRange({ base: config.sandbox.helper_uid_base, count: config.sandbox.helper_uid_count }, etcDir);
}
