import type { Config } from "../config/schema.ts";
import { MAX_TAP_QUEUES } from "./tap.ts";

/**
 * Queues for a pod's taps and VM NICs: one per vCPU, as Kuasar and Kata do, so each vCPU sends and receives on a
 * queue pair of its own; at most the kernel's MAX_TAP_QUEUES. StratoVirt's virtio-mmio NIC (machine_type microvm)
 * takes a single queue, and a multi-queue tap cannot be opened as a single-queue one.
 */
export function nicQueues(config: Config, vcpus: number): number {
  const h = config.hypervisor;
  if (h.type === "stratovirt" && h.machine_type.split(",")[0]?.replace(/^type=/, "") === "microvm") return 1;
  return Math.max(1, Math.min(Math.floor(vcpus), MAX_TAP_QUEUES));
}
