import type { ImageLayout } from "../../../contract/image-layout.ts";
import { imageLayoutOf } from "../host.ts";
import { QmpDriver } from "../qmp-driver.ts";
import { checkDiskId, checkFiles, type Plan } from "../vm.ts";
import type { DiskSpec, VmShape } from "../vm-api.ts";
import { randomCid } from "../vsock-cid.ts";
import type { StratoVirtConfig } from "./config.ts";
import { stratovirtPlan } from "./plan.ts";
import { hasVhostVsock, NO_VHOST_VSOCK } from "./vsock.ts";

export class StratoVirtVm extends QmpDriver<StratoVirtConfig> {
  readonly kind = "stratovirt";
  private cid = 0;
  private layout?: ImageLayout;

  protected async plan(attempt: number): Promise<Plan> {
    const { config, sandbox } = this.startInput();
    if (attempt === 0) {
      await checkFiles(config, this.env, ["kernel_path", "image_path", "initrd_path", "firmware", "path"]);
      if (!(await hasVhostVsock(this.env.probes))) throw new Error(`${NO_VHOST_VSOCK}: modprobe vhost_vsock`);
      this.layout = await imageLayoutOf(config.hypervisor.image_path, this.env.probes);
    }
    this.cid = randomCid();
    return stratovirtPlan(config, sandbox, this.cid, this.layout);
  }

  /** The kernel refuses a CID another VM holds (EADDRINUSE); drawing a new one fixes it. */
  protected override retryable(log: string): boolean {
    return /cid/i.test(log) && /(in use|EADDRINUSE)/i.test(log);
  }

  /** The boot size: vCPU and memory hot-plug are not driven on StratoVirt here. */
  async size(): Promise<VmShape> {
    const [vcpus, memoryMiB] = [Number(this.state.extra.vcpus), Number(this.state.extra.memoryMiB)];
    return { vcpus, memoryMiB, maxVcpus: vcpus, maxMemoryMiB: memoryMiB };
  }

  async grow(): Promise<void> {
    throw new Error(
      `sandbox ${this.id}: StratoVirt VMs keep the vCPUs and memory they booted with (hot-plug is not supported ` +
        "with StratoVirt here); recreate the pod with the new resources",
    );
  }

  async hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }> {
    checkDiskId(this.id, disk.id);
    if (this.state.devices[disk.id]) throw new Error(`sandbox ${this.id}: device ${disk.id} is already plugged`);
    if (this.state.extra.micro) throw new Error(`sandbox ${this.id}: microvm (virtio-mmio) cannot hot-plug disks here`);
    // Each root port takes one device, at slot 0.
    const used = new Set(Object.values(this.state.devices).map((d) => d.bus));
    const bus = String(this.state.extra.rootPorts ?? "")
      .split(",")
      .find((p) => p && !used.has(p));
    if (!bus) throw new Error(`sandbox ${this.id}: all PCIe root ports are in use`);
    const qmp = this.client();
    const node = `drive-${disk.id}`;
    await qmp.execute("blockdev-add", {
      "node-name": node,
      file: { driver: "file", filename: disk.path },
      cache: { direct: true },
      "read-only": disk.readOnly,
    });
    try {
      await qmp.execute("device_add", {
        id: disk.id,
        driver: "virtio-blk-pci",
        bus,
        addr: "0x0",
        drive: node,
        serial: disk.id,
      });
    } catch (err) {
      await qmp.execute("blockdev-del", { "node-name": node }).catch(() => {});
      throw new Error(`sandbox ${this.id}: hot-plug of ${disk.id} (${disk.path}) failed: ${(err as Error).message}`);
    }
    this.state.devices[disk.id] = { node, bus };
    return { id: disk.id, serial: disk.id };
  }
}
