import os from "node:os";
import { imageLayoutOf, virtiofsdDialect } from "../host.ts";
import { checkDiskId, checkFiles, type Plan, VmmDriver } from "../vm.ts";
import type { DeviceRemoval, DiskSpec, VmShape, VmStatus } from "../vm-api.ts";
import { ClhApi, ClhApiError } from "./api.ts";
import type { ClhConfig } from "./config.ts";
import { clhPlan } from "./plan.ts";

const STATES: Record<string, VmStatus["state"]> = {
  Running: "running",
  Paused: "paused",
  Created: "paused",
  BreakPoint: "paused",
  Shutdown: "shutdown",
};

export class ClhVm extends VmmDriver<ClhConfig> {
  readonly kind = "cloud-hypervisor";
  private api?: ClhApi;

  protected async plan(): Promise<Plan> {
    const { config, sandbox } = this.startInput();
    await checkFiles(config, this.env, ["kernel_path", "image_path", "initrd_path", "path"]);
    const probes = this.env.probes;
    return clhPlan(
      config,
      sandbox,
      await virtiofsdDialect(config.hypervisor.virtiofsd.path, probes),
      { cpus: os.availableParallelism(), memMiB: probes.hostMemMiB() },
      await imageLayoutOf(config.hypervisor.image_path, probes),
    );
  }

  protected async connectControl(timeoutMs: number, keepTrying: () => boolean): Promise<void> {
    const api = new ClhApi(this.state.controlSocket);
    await api.waitReady(timeoutMs, keepTrying);
    this.api = api;
  }

  protected closeControl(): void {
    this.api = undefined;
  }

  private client(): ClhApi {
    if (!this.api) throw new Error(`sandbox ${this.id}: no cloud-hypervisor API connection (the VM is not running)`);
    return this.api;
  }

  protected async powerButton(): Promise<void> {
    await this.client().powerButton();
  }

  /** vm.shutdown stops the guest, vmm.shutdown ends the process; a VM already shut down answers 405, which is fine. */
  protected async quit(): Promise<void> {
    const api = this.client();
    await api.shutdownVm().catch((err: Error) => {
      if (!(err instanceof ClhApiError)) throw err;
    });
    await api.shutdownVmm().catch((err: Error) => {
      // The process may exit before it answers.
      if (err instanceof ClhApiError) throw err;
    });
    this.shutdownSeen = true;
  }

  async status(): Promise<VmStatus> {
    if (!this.api) return { state: "exited", detail: "the VMM has exited" };
    try {
      const info = await this.api.vmInfo();
      return { state: STATES[info.state] ?? "unresponsive", detail: info.state };
    } catch (err) {
      return { state: "unresponsive", detail: (err as Error).message };
    }
  }

  async hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }> {
    checkDiskId(this.id, disk.id);
    if (this.state.devices[disk.id]) throw new Error(`sandbox ${this.id}: device ${disk.id} is already plugged`);
    const r = await this.client()
      .addDisk({ path: disk.path, readonly: disk.readOnly, direct: true, id: disk.id, serial: disk.id })
      .catch((err: Error) => {
        throw new Error(`sandbox ${this.id}: hot-plug of ${disk.id} (${disk.path}) failed: ${err.message}`);
      });
    this.state.devices[disk.id] = { bus: r.bdf };
    return { id: disk.id, serial: disk.id };
  }

  /** vm.info's config follows resizes: boot_vcpus is the count now, hotplugged_size what vm.resize added. */
  async size(): Promise<VmShape> {
    const config = (await this.client().vmInfo()).config as {
      cpus?: { boot_vcpus?: number; max_vcpus?: number };
      memory?: { size?: number; hotplugged_size?: number };
    };
    const mib = (b: number | undefined) => Math.floor((b ?? 0) / 1048576);
    const vcpus = config.cpus?.boot_vcpus ?? Number(this.state.extra.vcpus);
    return {
      vcpus,
      memoryMiB: mib(config.memory?.size) + mib(config.memory?.hotplugged_size),
      maxVcpus: config.cpus?.max_vcpus ?? vcpus,
      maxMemoryMiB: Number(this.state.extra.maxMemMiB ?? 0),
    };
  }

  async grow(target: { vcpus: number; memoryMiB: number }): Promise<void> {
    const now = await this.size();
    // Hot-plugged RAM goes in 128 MiB steps.
    const desiredMiB = now.memoryMiB + Math.ceil(Math.max(target.memoryMiB - now.memoryMiB, 0) / 128) * 128;
    if (target.vcpus > now.maxVcpus) {
      throw new Error(
        `sandbox ${this.id}: ${target.vcpus} vCPUs asked, but the VM was started with at most ${now.maxVcpus}`,
      );
    }
    if (desiredMiB > now.maxMemoryMiB) {
      throw new Error(
        `sandbox ${this.id}: ${desiredMiB} MiB asked, but the VM was started able to reach ${now.maxMemoryMiB} MiB`,
      );
    }
    const req: { desired_vcpus?: number; desired_ram?: number } = {};
    if (target.vcpus > now.vcpus) req.desired_vcpus = target.vcpus;
    if (desiredMiB > now.memoryMiB) req.desired_ram = desiredMiB * 1048576;
    if (Object.keys(req).length) await this.client().resize(req);
  }

  /** vm.remove-device asks the guest to eject the device; the API reports no completion to wait for. */
  async removeDevice(id: string): Promise<DeviceRemoval> {
    checkDiskId(this.id, id);
    await this.client().removeDevice(id);
    delete this.state.devices[id];
    return "removed";
  }
}
