import { virtiofsdDialect } from "../host.ts";
import { QmpDriver } from "../qmp-driver.ts";
import { checkDiskId, checkFiles, type Plan } from "../vm.ts";
import type { DiskSpec } from "../vm-api.ts";
import { randomCid } from "../vsock-cid.ts";
import { qemuAccelerator } from "./accelerator.ts";
import type { QemuConfig } from "./config.ts";
import { type QemuFacts, qemuPlan } from "./plan.ts";
import { qemuVsock } from "./vsock.ts";

export class QemuVm extends QmpDriver<QemuConfig> {
  readonly kind = "qemu";
  private facts?: QemuFacts;

  /** Probes the host once; later attempts only draw a new CID. */
  private async probe(config: QemuConfig): Promise<QemuFacts> {
    const h = config.hypervisor;
    const p = this.env.probes;
    await checkFiles(config, this.env, ["kernel_path", "image_path", "initrd_path", "qemu_path"]);
    const accel = await qemuAccelerator(h.machine_accelerators, p);
    this.log.info(`accelerator ${accel.value}: ${accel.reason}`);
    const vsock = await qemuVsock(config, p);
    this.log.info(`vsock ${vsock.value}: ${vsock.reason}`);
    return {
      accel: accel.value,
      vsock: vsock.value,
      cid: randomCid(),
      vhostNet: await p.exists("/dev/vhost-net"),
      hostMemMiB: p.hostMemMiB(),
      ...(h.share_fs === "VirtioFS" ? { virtiofsd: await virtiofsdDialect(h.virtiofsd.path, p) } : {}),
      ...(h.image_path && !h.disable_nvdimm ? { imageBytes: await p.fileSize(h.image_path) } : {}),
    };
  }

  protected async plan(attempt: number): Promise<Plan> {
    const { config, sandbox } = this.startInput();
    if (attempt === 0 || !this.facts) this.facts = await this.probe(config);
    else this.facts.cid = randomCid();
    return qemuPlan(config, sandbox, this.facts);
  }

  /** Another VM holds the CID we drew: a new CID fixes it (no native VHOST_VSOCK_SET_GUEST_CID probe here). */
  protected override retryable(log: string): boolean {
    return this.facts?.vsock === "vhost" && /unable to set guest cid/i.test(log);
  }

  async hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }> {
    checkDiskId(this.id, disk.id);
    if (this.state.devices[disk.id]) throw new Error(`sandbox ${this.id}: device ${disk.id} is already plugged`);
    const { blockDriver, hotplugBuses, machine } = this.state.extra;
    if (machine === "microvm") throw new Error(`sandbox ${this.id}: microvm (virtio-mmio) cannot hot-plug disks`);
    const qmp = this.client();
    const node = `drive-${disk.id}`;
    let bus: string;
    let driver: string;
    if (blockDriver === "VirtioScsi") {
      [bus, driver] = ["scsi0.0", "scsi-hd"];
    } else {
      bus = this.freeBus(String(hotplugBuses ?? ""), /^(q35|pc-q35-)/.test(String(machine)));
      driver = "virtio-blk-pci";
    }
    const blockDevice = await this.env.probes.isBlockDevice(disk.path).catch(() => {
      throw new Error(`sandbox ${this.id}: disk ${disk.id}: ${disk.path} does not exist`);
    });
    await qmp.execute("blockdev-add", {
      "node-name": node,
      driver: "raw",
      "read-only": disk.readOnly,
      file: { driver: blockDevice ? "host_device" : "file", filename: disk.path },
    });
    try {
      await qmp.execute("device_add", { driver, id: disk.id, drive: node, bus, serial: disk.id });
    } catch (err) {
      await qmp.execute("blockdev-del", { "node-name": node }).catch(() => {});
      throw new Error(`sandbox ${this.id}: hot-plug of ${disk.id} (${disk.path}) failed: ${(err as Error).message}`);
    }
    this.state.devices[disk.id] = { node, bus };
    return { id: disk.id, serial: disk.id };
  }

  /** A bridge (pc) takes many devices, so the least used; a PCIe root port (q35) takes exactly one. */
  private freeBus(buses: string, q35: boolean): string {
    const list = buses.split(",").filter(Boolean);
    const used = Object.values(this.state.devices).map((d) => d.bus);
    if (list.length === 0) {
      if (q35)
        throw new Error(`sandbox ${this.id}: no PCIe root port for hot-plug: set hypervisor.default_bridges > 0`);
      return "pci.0";
    }
    if (q35) {
      const free = list.find((b) => !used.includes(b));
      if (!free)
        throw new Error(`sandbox ${this.id}: all ${list.length} PCIe root ports are in use: raise default_bridges`);
      return free;
    }
    return list.reduce((a, b) => (used.filter((u) => u === b).length < used.filter((u) => u === a).length ? b : a));
  }
}
