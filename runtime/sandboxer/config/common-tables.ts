/**
 * The keys every VMM reads, and the shared keys some of them read (`optional`: a VMM's descriptor names those it
 * uses). Keys only one VMM reads live in its folder (hypervisor/<vmm>/config.ts), and so do its defaults for the keys
 * here; config/schema.ts puts the two together.
 */

import { DEFAULT_TRACING_ENDPOINT, tracingEndpointProblem } from "../../trace/endpoint.ts";
import { HYPERVISORS, type HypervisorKind } from "../hypervisor/names.ts";
import { metricsListenProblem } from "../metrics/address.ts";
import { absolute, absoluteOrEmpty, bool, type Fields, int, type Model, oneOf, str } from "./schema-lang.ts";

const LEVELS = ["", "error", "warn", "info", "debug", "trace"] as const;

export const SANDBOX_TABLE = {
  log_level: oneOf("Daemon log level; empty keeps the --log-level flag (default info).", LEVELS, "info", {
    aliases: { warning: "warn" },
  }),
  enable_tracing: bool(
    "OpenTelemetry traces of the daemon's work (Controller calls, Start's phases, task API calls, calls into the " +
      "guest), exported over OTLP/HTTP to tracing_endpoint. SIGUSR1 turns tracing on and off at run time. See " +
      "docs/operating.md#traces.",
    false,
  ),
  tracing_endpoint: str(
    "Where traces are POSTed (kuasar-vmm addition): a collector's OTLP/HTTP traces URL, http:// or https:// " +
      "(Jaeger and the OpenTelemetry Collector listen on port 4318).",
    DEFAULT_TRACING_ENDPOINT,
    { check: tracingEndpointProblem },
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
  metrics_listen: str(
    "Where the daemon serves Prometheus metrics (GET /metrics; kuasar-vmm addition): empty for none, " +
      "unix:///run/kuasar-vmm/metrics.sock (any absolute path; mode 0600) or a loopback port: 127.0.0.1:PORT, " +
      "[::1]:PORT, localhost:PORT. Other addresses are refused: the metrics name every pod. See docs/operating.md.",
    "",
    { check: metricsListenProblem },
  ),
};

export const HYPERVISOR_TABLE = {
  type: oneOf(
    "Which VMM runs the sandboxes (kuasar-vmm addition). Optional: without it the hypervisor is recognised from " +
      'qemu_path (qemu) or from "cloud-hypervisor" / "stratovirt" / "qemu" in path.',
    HYPERVISORS,
    "qemu",
  ),
  path: str("VMM binary. For qemu this is another name for qemu_path.", "", { check: absoluteOrEmpty }),
  vcpus: int("vCPUs a sandbox VM boots with.", 1, 1, 255),
  memory_in_mb: int("Guest memory in MiB.", 1024, 64, 1048576),
  kernel_path: str(
    "Guest kernel: an uncompressed vmlinux with a PVH entry, or a bzImage (qemu).",
    "/var/lib/kuasar/vmlinux.bin",
    {
      check: absolute,
    },
  ),
  image_path: str(
    "Guest root filesystem image, attached read-only: ext4 in partition 1 (root=/dev/vda1, or /dev/pmem0p1 mounted with -o dax as an NVDIMM or virtio-pmem device, which needs Kata's NVDIMM info block, as kuasar.img has). Set this or initrd_path.",
    "/var/lib/kuasar/kuasar.img",
    { check: absoluteOrEmpty },
  ),
  initrd_path: str("Guest initramfs, used instead of image_path. Setting it alone replaces the default image.", "", {
    check: absoluteOrEmpty,
  }),
  kernel_params: str("Extra kernel command line, appended last (so it overrides the generated parameters).", ""),
  debug: bool("Verbose VMM logging to <dir>/<id>/vmm.log.", false),
  hugepages: bool("Back guest memory with hugetlbfs (/dev/hugepages).", false),
  entropy_source: str("Host entropy file behind the guest's virtio-rng; empty for no RNG device.", "/dev/urandom", {
    check: absoluteOrEmpty,
  }),
  firmware: str("Firmware (stratovirt: pflash code, e.g. OVMF_CODE.fd; qemu: same as firmware_path).", "", {
    check: absoluteOrEmpty,
  }),
  enable_mem_prealloc: bool("Allocate all guest memory up front (qemu: same as mem_prealloc).", false),
  machine_type: str(
    "Machine. qemu: pc, q35 or microvm (or a versioned pc-i440fx-*/pc-q35-*); stratovirt: q35, virt or microvm " +
      "with options (mem-share=on is added when missing: virtio-fs needs shared memory).",
    "pc",
    { optional: true },
  ),
  block_device_driver: oneOf(
    "Disk transport: VirtioBlk (virtio-blk-pci), VirtioScsi (virtio-scsi-pci), VirtioMmio (virtio-blk-device, microvm only).",
    ["VirtioBlk", "VirtioScsi", "VirtioMmio"],
    "VirtioBlk",
    {
      optional: true,
      aliases: { "virtio-blk": "VirtioBlk", "virtio-scsi": "VirtioScsi", "virtio-mmio": "VirtioMmio" },
    },
  ),
};

export const TASK_TABLE = {
  debug: bool("Start the guest agent with task.debug: a debug shell on vsock port 1025.", false),
  enable_tracing: bool(
    "Traces go on into the guest: with [sandbox] enable_tracing on, calls into vmm-task carry the trace context and " +
      "the daemon exports the guest's spans (service vmm-task) beside its own. Also boots the guest with " +
      "task.enable_tracing, as Kuasar does.",
    false,
  ),
};

export const VIRTIOFSD_TABLE = {
  path: str(
    "virtiofsd binary (QEMU's C one or the Rust one; the flags are chosen to match).",
    "/usr/local/bin/virtiofsd",
    {
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
  syslog: bool("virtiofsd logs to syslog instead of <dir>/<id>/virtiofsd.log.", true),
  socket_path: str("Set per sandbox (<dir>/<id>/virtiofs.sock).", "", { ignored: "the socket is placed per sandbox" }),
  shared_dir: str("Set per sandbox (<dir>/<id>/shared).", "", { ignored: "the shared directory is per sandbox" }),
};

export interface TableSpec {
  fields: Fields;
  /** A table only some VMMs read: those whose descriptor lists it in `uses`. */
  optional?: boolean;
  /** Set by config/schema.ts: the VMMs that read the table; absent: all of them. */
  only?: readonly HypervisorKind[];
}

/** The tables by their dotted path, in the reference's order; VMMs' own tables follow them. */
export const COMMON_TABLES = {
  sandbox: { fields: SANDBOX_TABLE },
  hypervisor: { fields: HYPERVISOR_TABLE },
  "hypervisor.task": { fields: TASK_TABLE },
  "hypervisor.virtiofsd": { fields: VIRTIOFSD_TABLE, optional: true },
} satisfies Record<string, TableSpec>;

/** The configuration as code that works with any VMM sees it. */
export interface CommonConfig {
  /** The file it came from; undefined for defaultConfig(). */
  file: string | undefined;
  sandbox: Model<typeof SANDBOX_TABLE>;
  hypervisor: Model<typeof HYPERVISOR_TABLE> & {
    task: Model<typeof TASK_TABLE>;
    virtiofsd: Model<typeof VIRTIOFSD_TABLE>;
  };
}

/** A VMM's defaults for keys of these tables, where they differ from the tables' own (its shipped config.toml). */
export type CommonDefaults = {
  [T in keyof typeof COMMON_TABLES]?: Partial<Model<(typeof COMMON_TABLES)[T]["fields"]>>;
};
