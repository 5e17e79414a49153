import os from "node:os";

/** The pod-level resources kubelet hints in PodSandboxConfig.linux.resources (protobuf JSON field names). */
interface PodResourcesJson {
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

/**
 * The VM for a pod: the configured vcpus and memory_in_mb are what the guest itself needs (kernel, agent, page
 * cache); the pod's CPU and memory limits come on top, as Kata sizes its VMs, so a container may use its whole
 * limit. vCPUs never exceed the host's CPUs (or default_max_vcpus when set). Without limits the configured size.
 */
export function vmSize(
  base: { vcpus: number; memoryMiB: number; maxVcpus?: number },
  resources: PodResourcesJson | undefined,
  hostCpus = os.availableParallelism(),
): VmSize {
  const num = (v: string | number | undefined) => (v === undefined ? 0 : Number(v));
  const quota = num(resources?.cpuQuota);
  const period = num(resources?.cpuPeriod) || 100_000;
  const limit = num(resources?.memoryLimitInBytes);
  const extraCpus = quota > 0 ? Math.ceil(quota / period) : 0;
  const extraMiB = limit > 0 ? Math.ceil(limit / (1024 * 1024)) : 0;
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
