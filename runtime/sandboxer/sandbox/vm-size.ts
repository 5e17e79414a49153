import os from "node:os";

/** The pod-level resources kubelet hints in PodSandboxConfig.linux.resources (protobuf JSON field names). */
export interface PodResourcesJson {
  cpuPeriod?: string | number;
  cpuQuota?: string | number;
  memoryLimitInBytes?: string | number;
}

export interface VmSize {
  vcpus: number;
  memoryMiB: number;
  /** How the size was reached, for the log. */
  why: string;
}

/** What limits ask of the VM: CPUs (quota / period, fractional) and memory bytes. */
export interface Demand {
  cpus: number;
  memoryBytes: number;
}

export interface VmBase {
  vcpus: number;
  memoryMiB: number;
  maxVcpus?: number;
}

/**
 * The VM for a pod: the configured vcpus and memory_in_mb are what the guest itself needs (kernel, agent, page
 * cache); the pod's CPU and memory limits come on top, as Kata sizes its VMs, so a container may use its whole
 * limit. vCPUs never exceed the host's CPUs (or default_max_vcpus when set). Without limits the configured size.
 */
export function vmSize(base: VmBase, resources: PodResourcesJson | undefined, hostCpus = os.availableParallelism()) {
  return sizeFor(base, podDemand(resources), hostCpus);
}

/** PodSandboxConfig.linux.resources as a demand. */
export function podDemand(resources: PodResourcesJson | undefined): Demand {
  const num = (v: string | number | undefined) => {
    const n = v === undefined ? 0 : Number(v);
    return Number.isFinite(n) && n > 0 ? n : 0;
  };
  const quota = num(resources?.cpuQuota);
  const period = num(resources?.cpuPeriod) || 100_000;
  return { cpus: quota / period, memoryBytes: num(resources?.memoryLimitInBytes) };
}

/** vmSize for a demand already in CPUs and bytes (Update adds the containers' limits up). */
export function sizeFor(base: VmBase, demand: Demand, hostCpus = os.availableParallelism()): VmSize {
  const extraCpus = demand.cpus > 0 ? Math.ceil(demand.cpus - 1e-9) : 0;
  const extraMiB = demand.memoryBytes > 0 ? Math.ceil(demand.memoryBytes / (1024 * 1024)) : 0;
  const cap = Math.max(base.vcpus, Math.min(hostCpus, base.maxVcpus || hostCpus));
  const vcpus = Math.min(base.vcpus + extraCpus, cap);
  const memoryMiB = base.memoryMiB + extraMiB;
  const why =
    extraCpus || extraMiB
      ? `configured ${base.vcpus} vCPU / ${base.memoryMiB} MiB plus the pod's limits (${extraCpus} CPU, ${extraMiB} MiB)` +
        (vcpus < base.vcpus + extraCpus ? `, vCPUs capped at ${cap}` : "")
      : `configured ${base.vcpus} vCPU / ${base.memoryMiB} MiB (the pod sets no CPU or memory limit)`;
  return { vcpus, memoryMiB, why };
}
