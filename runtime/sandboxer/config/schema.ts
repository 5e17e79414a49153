/**
 * Every configuration key the daemon knows: its type, default (per hypervisor where they differ), allowed values and
 * meaning. The loader validates against this table, defaultConfig() is built from it and the configuration reference
 * is generated from it, so keys, defaults and docs cannot drift apart.
 */

export const HYPERVISORS = ["qemu", "cloud-hypervisor", "stratovirt"] as const;
export type HypervisorKind = (typeof HYPERVISORS)[number];

interface FieldBase<T> {
  doc: string;
  default: T;
  /** Defaults that differ from `default` for some hypervisors (the shipped installers/config/*.toml). */
  per?: Partial<Record<HypervisorKind, T>>;
  /** Hypervisors the key applies to; elsewhere it is reported and ignored. Absent: all of them. */
  only?: readonly HypervisorKind[];
  /** Kuasar's key name kept for compatibility: its value moves to this key when that one is not set. */
  deprecatedFor?: string;
  /** Accepted for compatibility with Kuasar's configs but has no effect here; says why when set. */
  ignored?: string;
}

export interface StringField extends FieldBase<string> {
  type: "string";
  /** Extra check on the value; returns what is wrong with it. */
  check?: (v: string) => string | undefined;
}
export interface IntegerField extends FieldBase<number> {
  type: "integer";
  min: number;
  max: number;
}
export interface BooleanField extends FieldBase<boolean> {
  type: "boolean";
}
export interface EnumField<V extends string = string> extends FieldBase<V> {
  type: "enum";
  values: readonly V[];
  /** Other spellings accepted and normalised (Kuasar writes "virtio-blk" and "VirtioBlk" for the same driver). */
  aliases?: Readonly<Record<string, V>>;
}
export interface StringListField extends FieldBase<string[]> {
  type: "string-list";
}
export type Field = StringField | IntegerField | BooleanField | EnumField | StringListField;

type Opts<T> = Omit<FieldBase<T>, "doc" | "default">;
const str = (doc: string, def: string, o: Opts<string> & { check?: StringField["check"] } = {}): StringField => ({
  type: "string",
  doc,
  default: def,
  ...o,
});
const int = (doc: string, def: number, min: number, max: number, o: Opts<number> = {}): IntegerField => ({
  type: "integer",
  doc,
  default: def,
  min,
  max,
  ...o,
});
const bool = (doc: string, def: boolean, o: Opts<boolean> = {}): BooleanField => ({
  type: "boolean",
  doc,
  default: def,
  ...o,
});
function oneOf<const V extends string>(
  doc: string,
  values: readonly V[],
  def: V,
  o: Opts<V> & { aliases?: Readonly<Record<string, V>> } = {},
): EnumField<V> {
  return { type: "enum", doc, values, default: def, ...o };
}
const strList = (doc: string, def: string[], o: Opts<string[]> = {}): StringListField => ({
  type: "string-list",
  doc,
  default: def,
  ...o,
});

const absoluteOrEmpty = (v: string) =>
  v === "" || v.startsWith("/") ? undefined : "must be an absolute path (or empty to turn the feature off)";
const absolute = (v: string) => (v.startsWith("/") ? undefined : "must be an absolute path");
const LEVELS = ["", "error", "warn", "info", "debug", "trace"] as const;
const QEMU = ["qemu"] as const;
const STRATOVIRT = ["stratovirt"] as const;
const VIRTIOFSD_USERS = ["qemu", "cloud-hypervisor"] as const;

export const SANDBOX_TABLE = {
  log_level: oneOf("Daemon log level; empty keeps the --log-level flag (default info).", LEVELS, "info", {
    aliases: { warning: "warn" },
  }),
  enable_tracing: bool(
    "Kuasar's switch for OpenTelemetry (OTLP) traces of sandbox operations; accepted, but no traces are exported yet.",
    false,
  ),
  containerd_address: str(
    "containerd's socket (kuasar-vmm addition); task events go to its ttrpc socket, <containerd_address>.ttrpc.",
    "/run/containerd/containerd.sock",
    { check: absolute },
  ),
  agent_timeout_ms: int(
    "How long Start waits, from the VMM's start, for the guest agent to answer (kuasar-vmm addition). A guest " +
      "under TCG boots in tens of seconds; under KVM in a few. Start then fails with the console's last lines.",
    120_000,
    1000,
    3_600_000,
  ),
  console_log_max_mb: int(
    "Size in MiB at which a sandbox's <dir>/<id>/console.log (the guest's serial console, which the daemon reads " +
      "from the VMM's console.sock) is renamed to console.log.1, replacing the one before: a guest's console " +
      "takes at most twice this in /run (host RAM). A guest that writes faster than the daemon saves is slowed " +
      "down; output while the daemon is not running is dropped (kuasar-vmm addition).",
    4,
    1,
    1024,
  ),
  helper_uid_base: int(
    "First uid (and gid) of the range the vsock helper (vhost-device-vsock, which parses the guest's virtqueues) " +
      "runs under: each running sandbox gets one of its own, with no capabilities, no supplementary groups and " +
      "no_new_privs. 0 runs the helper as root. Otherwise at least 65536 (above the host's own users); no user, " +
      "group or subordinate range in /etc/passwd, /etc/group, /etc/subuid or /etc/subgid may fall in the range " +
      "(the daemon refuses to start). See docs/privileges.md (kuasar-vmm addition).",
    2_000_000_000,
    0,
    2_147_483_647,
    { only: QEMU },
  ),
  helper_uid_count: int(
    "How many uids from helper_uid_base on are used: at least the most sandboxes this host runs at once " +
      "(kuasar-vmm addition).",
    65536,
    1,
    65536,
    { only: QEMU },
  ),
};

export const HYPERVISOR_TABLE = {
  type: oneOf(
    "Which VMM runs the sandboxes (kuasar-vmm addition). Optional: without it the hypervisor is recognised from " +
      'qemu_path (qemu) or from "cloud-hypervisor" / "stratovirt" / "qemu" in path.',
    HYPERVISORS,
    "qemu",
    { per: { "cloud-hypervisor": "cloud-hypervisor", stratovirt: "stratovirt" } },
  ),
  path: str("VMM binary. For qemu this is another name for qemu_path.", "", {
    per: { "cloud-hypervisor": "/usr/local/bin/cloud-hypervisor", stratovirt: "/usr/bin/stratovirt" },
    check: absoluteOrEmpty,
  }),
  qemu_path: str("QEMU binary.", "/usr/bin/qemu-system-x86_64", { only: QEMU, check: absolute }),
  vcpus: int("vCPUs a sandbox VM boots with.", 1, 1, 255),
  memory_in_mb: int("Guest memory in MiB.", 1024, 64, 1048576, { per: { qemu: 512 } }),
  kernel_path: str(
    "Guest kernel: an uncompressed vmlinux with a PVH entry, or a bzImage (qemu).",
    "/var/lib/kuasar/vmlinux.bin",
    {
      check: absolute,
    },
  ),
  image_path: str(
    "Guest root filesystem image (ext4, no partition table), attached read-only. Set this or initrd_path.",
    "/var/lib/kuasar/kuasar.img",
    { per: { stratovirt: "" }, check: absoluteOrEmpty },
  ),
  initrd_path: str("Guest initramfs, used instead of image_path. Setting it alone replaces the default image.", "", {
    per: { stratovirt: "/var/lib/kuasar/kuasar.initrd" },
    check: absoluteOrEmpty,
  }),
  kernel_params: str("Extra kernel command line, appended last (so it overrides the generated parameters).", "", {
    per: { stratovirt: "task.log_level=debug task.sharefs_type=virtiofs" },
  }),
  debug: bool("Verbose VMM logging to <dir>/<id>/vmm.log.", false),
  hugepages: bool("Back guest memory with hugetlbfs (/dev/hugepages).", false),
  entropy_source: str("Host entropy file behind the guest's virtio-rng; empty for no RNG device.", "/dev/urandom", {
    check: absoluteOrEmpty,
  }),
  firmware: str("Firmware (stratovirt: pflash code, e.g. OVMF_CODE.fd; qemu: same as firmware_path).", "", {
    per: { stratovirt: "/usr/share/edk2/ovmf/OVMF_CODE.fd" },
    check: absoluteOrEmpty,
  }),
  enable_mem_prealloc: bool("Allocate all guest memory up front (qemu: same as mem_prealloc).", false),

  // qemu
  machine_type: str(
    "Machine. qemu: pc, q35 or microvm (or a versioned pc-i440fx-*/pc-q35-*); stratovirt: q35, virt or microvm " +
      "with options (mem-share=on is added when missing: virtio-fs needs shared memory).",
    "pc",
    { per: { stratovirt: "q35,mem-share=on" }, only: ["qemu", "stratovirt"] },
  ),
  machine_accelerators: str(
    'Accelerator: "auto" (kvm where it works, else tcg; the choice is logged), "kvm" or "tcg". Other ' +
      "comma-separated words are passed on as -machine options, as Kuasar does.",
    "auto",
    { only: QEMU },
  ),
  cpu_model: str('-cpu model; "host" needs kvm, so tcg uses "max" instead.', "host", { only: QEMU }),
  cpu_features: str("Comma-separated CPU features appended to -cpu.", "", { only: QEMU }),
  firmware_path: str("-bios firmware image; empty for QEMU's default.", "", { only: QEMU, check: absoluteOrEmpty }),
  default_bridges: int("PCI bridges (pc) or PCIe root ports (q35) for hot-plugged disks.", 1, 0, 5, { only: QEMU }),
  default_max_vcpus: int("Maximum vCPUs (-smp maxcpus); 0 means the same as vcpus.", 0, 0, 255, { only: QEMU }),
  mem_slots: int("Memory hotplug slots (-m slots=, maxmem = host memory); 0 turns memory hotplug off.", 1, 0, 255, {
    only: QEMU,
  }),
  mem_offset: int("Kata's NVDIMM memory offset.", 0, 0, 2 ** 31, {
    only: QEMU,
    ignored: "kuasar-vmm sizes the rootfs NVDIMM from the image file",
  }),
  memory_path: str("File or hugetlbfs mount backing guest memory; empty for anonymous memory.", "", {
    only: QEMU,
    check: absoluteOrEmpty,
  }),
  file_backend_mem_path: str("Kata's memory backend for virtio-fs DAX.", "", {
    only: QEMU,
    ignored: "virtio-fs DAX is not used; set memory_path for a file-backed guest memory",
  }),
  mem_prealloc: bool("Preallocate guest memory (prealloc=on).", false, { only: QEMU }),
  enable_vhost_user_store: bool("Share guest memory for vhost-user block devices; needs hugepages.", false, {
    only: QEMU,
  }),
  enable_swap: bool("Kata's guest memory swap.", false, {
    only: QEMU,
    ignored: "guest memory is never locked, so the host may swap it anyway",
  }),
  enable_iothreads: bool("Serve the rootfs disk from a dedicated QEMU I/O thread.", false, { only: QEMU }),
  block_device_driver: oneOf(
    "Disk transport: VirtioBlk (virtio-blk-pci), VirtioScsi (virtio-scsi-pci), VirtioMmio (virtio-blk-device, microvm only).",
    ["VirtioBlk", "VirtioScsi", "VirtioMmio"],
    "VirtioBlk",
    {
      only: ["qemu", "stratovirt"],
      aliases: { "virtio-blk": "VirtioBlk", "virtio-scsi": "VirtioScsi", "virtio-mmio": "VirtioMmio" },
    },
  ),
  disable_nvdimm: bool("false: attach image_path as a read-only NVDIMM (root=/dev/pmem0) instead of a disk.", true, {
    only: QEMU,
  }),
  share_fs: oneOf(
    "How <dir>/<id>/shared reaches the guest: Virtio9P (QEMU's own 9p server) or VirtioFS (virtiofsd helper).",
    ["Virtio9P", "VirtioFS"],
    "Virtio9P",
    { only: QEMU, aliases: { "virtio-9p": "Virtio9P", "virtio-fs": "VirtioFS" } },
  ),
  msize_9p: int("Kata's 9p msize.", 8192, 4096, 1048576, {
    only: QEMU,
    ignored: "the guest agent mounts the 9p share with the kernel's default msize",
  }),
  virtio_9p_direct_io: bool("Write 9p data through to the host immediately (-fsdev writeout=immediate).", false, {
    only: QEMU,
  }),
  virtio_9p_multidevs: oneOf(
    "-fsdev multidevs= for shares spanning several host filesystems: remap, forbid or warn; empty for QEMU's default.",
    ["", "remap", "forbid", "warn"],
    "",
    { only: QEMU },
  ),
  use_vsock: bool("Talk to the guest agent over vsock. Must stay true: vmm-task listens only on vsock.", true, {
    only: QEMU,
  }),
  vsock_mode: oneOf(
    'vsock transport: "vhost" (/dev/vhost-vsock), "hybrid" (vhost-device-vsock, a UDS on the host) or "auto" ' +
      "(vhost where /dev/vhost-vsock exists; the choice is logged).",
    ["auto", "vhost", "hybrid"],
    "auto",
    { only: QEMU },
  ),
  vhost_user_vsock_path: str("vhost-device-vsock binary for hybrid vsock.", "/usr/bin/vhost-device-vsock", {
    only: QEMU,
    check: absolute,
  }),
  virtiofs_daemon_path: str("Kuasar's older name for [hypervisor.virtiofsd] path.", "", {
    only: QEMU,
    deprecatedFor: "hypervisor.virtiofsd.path",
  }),
  virtiofs_cache: str("Kuasar's older name for [hypervisor.virtiofsd] cache.", "", {
    only: QEMU,
    deprecatedFor: "hypervisor.virtiofsd.cache",
  }),
  virtiofs_extra_args: strList("Extra virtiofsd arguments, appended after the generated ones.", [], { only: QEMU }),
  virtiofs_cache_size: int("Kata's virtio-fs DAX window in MiB.", 0, 0, 1048576, {
    only: QEMU,
    ignored: "QEMU 7.2's vhost-user-fs-pci has no DAX window",
  }),
} satisfies Record<string, Field>;

export const TASK_TABLE = {
  debug: bool("Start the guest agent with task.debug: a debug shell on vsock port 1025.", false),
  enable_tracing: bool(
    "Boots the guest with task.enable_tracing (Kuasar's agent tracing); vmm-task accepts it but exports no traces yet.",
    false,
  ),
};

export const VIRTIOFSD_TABLE = {
  path: str(
    "virtiofsd binary (QEMU's C one or the Rust one; the flags are chosen to match).",
    "/usr/local/bin/virtiofsd",
    {
      per: { qemu: "/usr/lib/qemu/virtiofsd" },
      check: absolute,
    },
  ),
  log_level: oneOf("virtiofsd log level.", ["error", "warn", "info", "debug", "trace", "off"], "info", {
    aliases: { err: "error", warning: "warn" },
  }),
  cache: oneOf(
    'virtiofsd cache policy ("none" is the C virtiofsd\'s name for never).',
    ["never", "auto", "always", "metadata"],
    "never",
    {
      aliases: { none: "never" },
    },
  ),
  thread_pool_size: int("virtiofsd worker threads; 0 for virtiofsd's default.", 4, 0, 1024),
  syslog: bool("virtiofsd logs to syslog instead of <dir>/<id>/virtiofsd.log.", true, { per: { qemu: false } }),
  socket_path: str("Set per sandbox (<dir>/<id>/virtiofs.sock).", "", { ignored: "the socket is placed per sandbox" }),
  shared_dir: str("Set per sandbox (<dir>/<id>/shared).", "", { ignored: "the shared directory is per sandbox" }),
};

export const VIRTIOFSD_CONF_TABLE = {
  path: str("StratoVirt's vhost_user_fs binary.", "/usr/bin/vhost_user_fs", { check: absolute }),
};

export type TablePath =
  | "sandbox"
  | "hypervisor"
  | "hypervisor.task"
  | "hypervisor.virtiofsd"
  | "hypervisor.virtiofsd_conf";
interface TableSpec {
  fields: Record<string, Field>;
  /** Hypervisors that use the table; absent: all of them. */
  only?: readonly HypervisorKind[];
}

/** Tables by their dotted path. */
export const TABLES: Record<TablePath, TableSpec> = {
  sandbox: { fields: SANDBOX_TABLE },
  hypervisor: { fields: HYPERVISOR_TABLE },
  "hypervisor.task": { fields: TASK_TABLE },
  "hypervisor.virtiofsd": { fields: VIRTIOFSD_TABLE, only: VIRTIOFSD_USERS },
  "hypervisor.virtiofsd_conf": { fields: VIRTIOFSD_CONF_TABLE, only: STRATOVIRT },
};

/** The value type a field spec describes. */
type ValueOf<F> =
  F extends EnumField<infer V>
    ? V
    : F extends IntegerField
      ? number
      : F extends BooleanField
        ? boolean
        : F extends StringListField
          ? string[]
          : string;
type Model<T> = { -readonly [K in keyof T]: ValueOf<T[K]> };

export type SandboxConfig = Model<typeof SANDBOX_TABLE>;
export type TaskConfig = Model<typeof TASK_TABLE>;
export type VirtiofsdConfig = Model<typeof VIRTIOFSD_TABLE>;
export type VirtiofsdConfConfig = Model<typeof VIRTIOFSD_CONF_TABLE>;
export type HypervisorConfig = Model<typeof HYPERVISOR_TABLE> & {
  task: TaskConfig;
  virtiofsd: VirtiofsdConfig;
  virtiofsd_conf: VirtiofsdConfConfig;
};

export interface Config {
  /** The file it came from; undefined for defaultConfig(). */
  file: string | undefined;
  sandbox: SandboxConfig;
  hypervisor: HypervisorConfig;
}

export function fieldDefault<T>(f: FieldBase<T>, hv: HypervisorKind): T {
  const v = f.per?.[hv] ?? f.default;
  return Array.isArray(v) ? ([...v] as T) : v;
}

function tableDefaults(fields: Record<string, Field>, hv: HypervisorKind): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, fieldDefault<unknown>(f, hv)]));
}

/** The configuration a hypervisor runs with when the file sets nothing: the shipped installers/config/*.toml. */
export function defaultConfig(hv: HypervisorKind): Config {
  const hypervisor = {
    ...tableDefaults(TABLES.hypervisor.fields, hv),
    task: tableDefaults(TABLES["hypervisor.task"].fields, hv),
    virtiofsd: tableDefaults(TABLES["hypervisor.virtiofsd"].fields, hv),
    virtiofsd_conf: tableDefaults(TABLES["hypervisor.virtiofsd_conf"].fields, hv),
  } as HypervisorConfig;
  return { file: undefined, sandbox: tableDefaults(TABLES.sandbox.fields, hv) as SandboxConfig, hypervisor };
}

export function describeType(f: Field): string {
  switch (f.type) {
    case "integer":
      return `integer ${f.min}..${f.max}`;
    case "enum":
      return `one of ${f.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "string-list":
      return "array of strings";
    default:
      return f.type;
  }
}

export interface SchemaRow {
  /** Dotted key path, e.g. hypervisor.vcpus. */
  key: string;
  type: string;
  /** Default per hypervisor that uses the key. */
  defaults: Partial<Record<HypervisorKind, unknown>>;
  hypervisors: HypervisorKind[];
  doc: string;
  deprecatedFor?: string;
  ignored?: string;
}

/** One row per key, in file order: what a configuration reference is generated from. */
export function describeSchema(): SchemaRow[] {
  const rows: SchemaRow[] = [];
  for (const [table, { fields, only: tableOnly }] of Object.entries(TABLES)) {
    for (const [name, f] of Object.entries(fields)) {
      const hypervisors = HYPERVISORS.filter(
        (hv) => (!tableOnly || tableOnly.includes(hv)) && (!f.only || f.only.includes(hv)),
      );
      rows.push({
        key: `${table}.${name}`,
        type: describeType(f),
        defaults: Object.fromEntries(hypervisors.map((hv) => [hv, fieldDefault<unknown>(f, hv)])),
        hypervisors,
        doc: f.doc,
        ...(f.deprecatedFor ? { deprecatedFor: f.deprecatedFor } : {}),
        ...(f.ignored ? { ignored: f.ignored } : {}),
      });
    }
  }
  return rows;
}
