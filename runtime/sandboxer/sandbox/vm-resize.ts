import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../../log/log.ts";
import { SandboxService } from "../../protos/gen/kuasar/sandbox_pb.ts";
import type { TtrpcClient } from "../../ttrpc/index.ts";
import type { Hypervisor } from "../hypervisor/vm-api.ts";
import type { PodResources } from "./pod-cgroup.ts";
import { type Demand, sizeFor, type VmBase } from "./vm-size.ts";

/** How long the guest may take to online what was hot-plugged (ACPI notification, then the agent's writes). */
const ONLINE_MS = 20_000;
const MIB = 1024 * 1024;

/** A limit as CPUs and bytes (OCI LinuxResources: cpu.quota / cpu.period, memory.limit); no limit is 0. */
export function demandOf(r: PodResources | undefined): Demand {
  const quota = r?.cpu?.quota ?? 0;
  const period = r?.cpu?.period || 100_000;
  const limit = r?.memory?.limit ?? 0;
  return {
    cpus: Number.isFinite(quota) && quota > 0 && period > 0 ? quota / period : 0,
    memoryBytes: Number.isFinite(limit) && limit > 0 ? limit : 0,
  };
}

export interface ResizeDeps {
  vm: Pick<Hypervisor, "size" | "grow">;
  agent: () => TtrpcClient;
  /** The configured size the guest itself needs; limits come on top (vm-size.ts). */
  base: VmBase;
  /** The pod's limits from its PodSandboxConfig, which sized the VM at boot. */
  pod: Demand;
  hostCpus?: number;
  log: Logger;
}

/**
 * Keeps a running VM as large as its pod asks: the configured base plus the larger of the pod's limits (Controller
 * Update) and the sum of its containers' (task Create and Update, which is how kubelet resizes a pod through
 * containerd 2.1). Growing hot-plugs vCPUs and memory, then waits for the guest to online them. Shrinking is
 * deferred: nothing is unplugged, so the VM keeps its size until the pod is recreated.
 */
export class VmResizer {
  private readonly containers = new Map<string, PodResources>();
  private pod: Demand;
  private turn: Promise<void> = Promise.resolve();

  constructor(private readonly deps: ResizeDeps) {
    this.pod = deps.pod;
  }

  /**
   * A container's limits as created, or as an Update changes them (a field it leaves out keeps its value, as runc
   * update does); resolves once the VM has room for them.
   */
  setContainer(id: string, r: PodResources | undefined): Promise<void> {
    const old = this.containers.get(id);
    this.containers.set(id, {
      cpu: { ...old?.cpu, ...r?.cpu },
      memory: { ...old?.memory, ...r?.memory },
    });
    return this.apply(`container ${id}`);
  }

  /** A deleted container's limits no longer count (its share is not unplugged). */
  forget(id: string): void {
    this.containers.delete(id);
  }

  setPod(r: PodResources): Promise<void> {
    this.pod = demandOf(r);
    return this.apply("the pod's resources");
  }

  /** The target for the demands recorded now. */
  target(): { vcpus: number; memoryMiB: number; why: string } {
    let [cpus, memoryBytes] = [0, 0];
    for (const r of this.containers.values()) {
      const d = demandOf(r);
      cpus += d.cpus;
      memoryBytes += d.memoryBytes;
    }
    const demand = { cpus: Math.max(cpus, this.pod.cpus), memoryBytes: Math.max(memoryBytes, this.pod.memoryBytes) };
    return sizeFor(this.deps.base, demand, this.deps.hostCpus);
  }

  /** One resize at a time, each against the demands as they are when its turn comes. */
  private apply(what: string): Promise<void> {
    const run = this.turn.then(() => this.grow(what));
    this.turn = run.catch(() => {});
    return run;
  }

  private async grow(what: string): Promise<void> {
    const { vm, log } = this.deps;
    const want = this.target();
    const now = await vm.size();
    const vcpus = Math.min(Math.max(want.vcpus, now.vcpus), now.maxVcpus);
    const memoryMiB = Math.max(want.memoryMiB, now.memoryMiB);
    if (want.vcpus < now.vcpus || want.memoryMiB < now.memoryMiB) {
      log.info(
        `${what}: the pod now needs ${want.vcpus} vCPU / ${want.memoryMiB} MiB; the VM keeps its ${now.vcpus} vCPU / ` +
          `${now.memoryMiB} MiB until the pod is recreated (vCPUs and memory are never unplugged)`,
      );
    }
    if (vcpus < want.vcpus) {
      log.warn(`${what}: ${want.vcpus} vCPUs wanted, the VM can take ${now.maxVcpus}; growing to that`);
    }
    if (vcpus <= now.vcpus && memoryMiB <= now.memoryMiB) return;
    await vm.grow({ vcpus, memoryMiB });
    // The agent's reply is the guest's word: only compared with what was asked and logged.
    const got = await this.deps
      .agent()
      .service(SandboxService)
      .onlineCpuMem(
        { cpus: vcpus, memoryBytes: BigInt(memoryMiB * MIB), timeoutMs: ONLINE_MS },
        { timeoutMs: ONLINE_MS + 5_000 },
      );
    const gotMiB = Number(got.onlineMemoryBytes / BigInt(MIB));
    if (got.onlineCpus < vcpus || gotMiB < memoryMiB) {
      throw new Error(
        `the VM was grown to ${vcpus} vCPU / ${memoryMiB} MiB, but the guest has only ${got.onlineCpus} vCPU / ` +
          `${gotMiB} MiB online after ${ONLINE_MS} ms (its kernel needs ACPI CPU and memory hotplug: see kernel-configs/)`,
      );
    }
    log.info(`${what}: VM grown from ${now.vcpus} vCPU / ${now.memoryMiB} MiB to ${vcpus} vCPU / ${memoryMiB} MiB`);
  }
}

/** OCI LinuxResources JSON (a task Update's Any, a bundle's linux.resources) as PodResources; undefined if none. */
export function resourcesOf(json: unknown): PodResources | undefined {
  if (!json || typeof json !== "object") return undefined;
  const r = json as { cpu?: { quota?: unknown; period?: unknown }; memory?: { limit?: unknown } };
  const n = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
  const [quota, period, limit] = [n(r.cpu?.quota), n(r.cpu?.period), n(r.memory?.limit)];
  return {
    ...(quota !== undefined || period !== undefined
      ? { cpu: { ...(quota !== undefined ? { quota } : {}), ...(period !== undefined ? { period } : {}) } }
      : {}),
    ...(limit !== undefined ? { memory: { limit } } : {}),
  };
}

/** linux.resources of a container's host bundle (containerd wrote it; read only after the bundle was accepted). */
export async function resourcesInBundle(hostBundle: string): Promise<PodResources | undefined> {
  const spec = JSON.parse(await readFile(path.join(hostBundle, "config.json"), "utf8")) as {
    linux?: { resources?: unknown };
  };
  return resourcesOf(spec.linux?.resources);
}

/** The LinuxResources JSON in a task Update; undefined when it is not JSON (the guest then refuses the Update). */
export function resourcesInUpdate(any: { value: Uint8Array } | undefined): PodResources | undefined {
  if (!any?.value.length) return undefined;
  try {
    return resourcesOf(JSON.parse(Buffer.from(any.value).toString("utf8")));
  } catch {
    return undefined;
  }
}
