import type { QmpClient } from "../qmp.ts";
import type { HypervisorState, VmShape } from "../vm-api.ts";

/**
 * vCPU and memory hot-plug over QMP. What the VM has now is asked of QEMU each time (query-cpus-fast,
 * query-memory-devices), so a daemon that recovered a resized VM still counts right; the limits come from the plan
 * (state.extra). Nothing is ever unplugged.
 */

/** Linux onlines memory in 128 MiB sections on x86_64: a DIMM of another size cannot be fully used. */
export const DIMM_ALIGN_MIB = 128;

interface HotpluggableCpu {
  type: string;
  props: Record<string, number>;
  "qom-path"?: string;
}

interface MemoryDevice {
  type: string;
  data?: { id?: string; size?: number; addr?: number };
}

const num = (v: unknown, fallback: number) => (typeof v === "number" && Number.isFinite(v) ? v : fallback);

/** The VM's vCPUs and memory (boot memory + DIMMs) as QEMU reports them, with the plan's ceilings. */
export async function qemuSize(qmp: QmpClient, extra: HypervisorState["extra"]): Promise<VmShape> {
  const cpus = await qmp.execute<unknown[]>("query-cpus-fast");
  const devices = await qmp.execute<MemoryDevice[]>("query-memory-devices");
  const dimmBytes = devices.filter((d) => d.type === "dimm").reduce((n, d) => n + num(d.data?.size, 0), 0);
  const bootMiB = num(extra.memoryMiB, 0);
  return {
    vcpus: cpus.length,
    memoryMiB: bootMiB + Math.floor(dimmBytes / 1048576),
    maxVcpus: num(extra.maxVcpus, cpus.length),
    maxMemoryMiB: num(extra.maxMemMiB, bootMiB),
  };
}

/**
 * Adds vCPUs and one DIMM (rounded up to DIMM_ALIGN_MIB) until the VM has `target`; refuses, naming the config key,
 * what the VM was not started able to take (maxcpus, memory slots, maxmem).
 */
export async function qemuGrow(
  qmp: QmpClient,
  extra: HypervisorState["extra"],
  target: { vcpus: number; memoryMiB: number },
  sandboxId: string,
): Promise<void> {
  const now = await qemuSize(qmp, extra);
  if (target.vcpus > now.maxVcpus) {
    throw new Error(
      `sandbox ${sandboxId}: ${target.vcpus} vCPUs asked, but the VM was started with at most ${now.maxVcpus} ` +
        "(hypervisor.default_max_vcpus; 0 means the host's CPUs; machine microvm cannot add vCPUs)",
    );
  }
  const addMiB = target.memoryMiB - now.memoryMiB;
  if (addMiB > 0) {
    const used = (await qmp.execute<MemoryDevice[]>("query-memory-devices")).filter((d) => d.type === "dimm").length;
    const sizeMiB = Math.ceil(addMiB / DIMM_ALIGN_MIB) * DIMM_ALIGN_MIB;
    if (used >= num(extra.memSlots, 0)) {
      throw new Error(
        `sandbox ${sandboxId}: no free memory slot to add ${addMiB} MiB (${used} used; raise hypervisor.mem_slots ` +
          "for pods created afterwards)",
      );
    }
    if (now.memoryMiB + sizeMiB > now.maxMemoryMiB) {
      throw new Error(
        `sandbox ${sandboxId}: ${now.memoryMiB + sizeMiB} MiB would exceed the VM's maxmem of ${now.maxMemoryMiB} MiB`,
      );
    }
    await addDimm(qmp, extra, sizeMiB, used);
  }
  if (target.vcpus > now.vcpus) {
    const free = (await qmp.execute<HotpluggableCpu[]>("query-hotpluggable-cpus")).filter((c) => !c["qom-path"]);
    // In topology order, so the guest numbers its CPUs as a VM booted with them would.
    const key = (c: HotpluggableCpu) => ["socket-id", "die-id", "core-id", "thread-id"].map((k) => num(c.props[k], 0));
    free.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      const i = x.findIndex((v, j) => v !== y[j]);
      return i < 0 ? 0 : (x[i] as number) - (y[i] as number);
    });
    for (const [i, cpu] of free.slice(0, target.vcpus - now.vcpus).entries()) {
      await qmp.execute("device_add", { driver: cpu.type, id: `vcpu-${now.vcpus + i}`, ...cpu.props });
    }
  }
}

/**
 * Where the next DIMM goes: after every memory device, on a 128 MiB boundary. QEMU would place it right after the
 * last one, and behind the rootfs NVDIMM (the image's size) the guest could not add a misaligned DIMM at all.
 */
function nextDimmAddr(devices: MemoryDevice[]): number | undefined {
  const ends = devices.map((d) => num(d.data?.addr, 0) + num(d.data?.size, 0)).filter((end) => end > 0);
  if (ends.length === 0) return undefined;
  const align = DIMM_ALIGN_MIB * 1048576;
  return Math.ceil(Math.max(...ends) / align) * align;
}

async function addDimm(qmp: QmpClient, extra: HypervisorState["extra"], sizeMiB: number, used: number) {
  const devices = await qmp.execute<MemoryDevice[]>("query-memory-devices");
  const ids = new Set(devices.map((d) => d.data?.id).filter(Boolean));
  const addr = nextDimmAddr(devices);
  let n = used;
  while (ids.has(`dimm-${n}`)) n++;
  const backend: Record<string, unknown> = {
    "qom-type": String(extra.memBackend || "memory-backend-ram"),
    id: `mem-dimm-${n}`,
    size: sizeMiB * 1048576,
  };
  if (backend["qom-type"] === "memory-backend-file") backend["mem-path"] = String(extra.memPath);
  if (backend["qom-type"] !== "memory-backend-ram") backend.share = extra.memShared === true;
  if (extra.memPrealloc === true) backend.prealloc = true;
  await qmp.execute("object-add", backend);
  try {
    await qmp.execute("device_add", {
      driver: "pc-dimm",
      id: `dimm-${n}`,
      memdev: `mem-dimm-${n}`,
      ...(addr === undefined ? {} : { addr }),
    });
  } catch (err) {
    await qmp.execute("object-del", { id: `mem-dimm-${n}` }).catch(() => {});
    throw err;
  }
}
