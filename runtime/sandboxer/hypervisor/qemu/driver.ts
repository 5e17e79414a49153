import os from "node:os";
import { imageLayoutOf, virtiofsdDialect } from "../host.ts";
import { QmpError } from "../qmp.ts";
import { QmpDriver } from "../qmp-driver.ts";
import { checkDiskId, checkFiles, type Plan } from "../vm.ts";
import type { DeviceRemoval, DiskSpec, VmShape } from "../vm-api.ts";
import { randomCid } from "../vsock-cid.ts";
import { qemuAccelerator } from "./accelerator.ts";
import type { QemuConfig } from "./config.ts";
import { type QemuFacts, qemuPlan } from "./plan.ts";
import { qemuGrow, qemuSize } from "./resize.ts";
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
      hostCpus: os.availableParallelism(),
      ...(h.share_fs === "VirtioFS" ? { virtiofsd: await virtiofsdDialect(h.virtiofsd.path, p) } : {}),
      ...(h.image_path && !h.disable_nvdimm ? { imageBytes: await p.fileSize(h.image_path) } : {}),
      imageLayout: await imageLayoutOf(h.image_path, p),
    };
  }

  protected async plan(attempt: number): Promise<Plan> {
    const { config, sandbox } = this.startInput();
    if (attempt === 0 || !this.facts) this.facts = await this.probe(config);
    else this.facts.cid = randomCid();
    const plan = qemuPlan(config, sandbox, this.facts);
    if (attempt === 0 && plan.vmm.args.some((a) => a.endsWith("thread=single"))) {
      this.log.info("tcg single-threaded: this VM can hot-add vCPUs, which multi-threaded TCG aborts on");
    }
    return plan;
  }

  protected override retryable(log: string): boolean {
    return this.facts !== undefined && qemuStartRetryable(this.facts.vsock, log);
  }

  async hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }> {
    checkDiskId(this.id, disk.id);
    if (this.state.devices[disk.id]) throw new Error(`sandbox ${this.id}: device ${disk.id} is already plugged`);
    const { blockDriver, hotplugBuses, machine } = this.state.extra;
    if (machine === "microvm") throw new Error(`sandbox ${this.id}: microvm (virtio-mmio) cannot hot-plug disks`);
    const qmp = this.client();
    let bus: string;
    let driver: string;
    if (blockDriver === "VirtioScsi") {
      [bus, driver] = ["scsi0.0", "scsi-hd"];
    } else {
      bus = this.freeBus(String(hotplugBuses ?? ""), /^(q35|pc-q35-)/.test(String(machine)));
      driver = "virtio-blk-pci";
    }
    const [node, file] = [`drive-${disk.id}`, `file-${disk.id}`];
    // Taken at once, so a hot-plug running alongside picks another root port.
    this.state.devices[disk.id] = { node, bus };
    try {
      const blockDevice = await this.env.probes.isBlockDevice(disk.path).catch(() => {
        throw new Error(`disk ${disk.id}: ${disk.path} does not exist`);
      });
      // The protocol node holding the host file is a node of its own, so a guest that never releases the device
      // can have it swapped for an empty one (notReleased).
      await qmp.execute("blockdev-add", {
        "node-name": file,
        driver: blockDevice ? "host_device" : "file",
        filename: disk.path,
        "read-only": disk.readOnly,
      });
      try {
        await qmp.execute("blockdev-add", { "node-name": node, driver: "raw", file, "read-only": disk.readOnly });
        await qmp.execute("device_add", { driver, id: disk.id, drive: node, bus, serial: disk.id });
      } catch (err) {
        for (const n of [node, file]) await qmp.execute("blockdev-del", { "node-name": n }).catch(() => {});
        throw new Error(`hot-plug of ${disk.id} (${disk.path}) failed: ${(err as Error).message}`);
      }
    } catch (err) {
      delete this.state.devices[disk.id];
      throw new Error(`sandbox ${this.id}: ${(err as Error).message}`);
    }
    return { id: disk.id, serial: disk.id };
  }

  size(): Promise<VmShape> {
    return qemuSize(this.client(), this.state.extra);
  }

  async grow(target: { vcpus: number; memoryMiB: number }): Promise<void> {
    await qemuGrow(this.client(), this.state.extra, target, this.id);
  }

  /** The device's format node, the node holding the host file, and the empty one that replaces it (notReleased). */
  protected override nodesOf(id: string): string[] {
    return [`drive-${id}`, `file-${id}`, `null-${id}`];
  }

  /**
   * The guest kept the device (it ignored the unplug, or is too slow): QEMU must not keep the host file open for it.
   * The device's format node is pointed at an empty backend and the node that held the file deleted, so the file (a
   * snapshot containerd removes next, a volume) is released; the guest's reads now return zeroes and its writes go
   * nowhere. The device itself stays until the guest lets go or the VM ends.
   */
  protected override async notReleased(id: string, timeoutMs: number): Promise<DeviceRemoval> {
    const qmp = this.client();
    const [node, file, empty] = this.nodesOf(id) as [string, string, string];
    const fresh = await qmp
      .execute("blockdev-add", { "node-name": empty, driver: "null-co", "read-zeroes": true })
      .then(
        () => true,
        (err: Error) => {
          // Cut off by an earlier removal already.
          if (err instanceof QmpError && /^Duplicate nodes with node-name/.test(err.desc)) return false;
          throw err;
        },
      );
    if (fresh) {
      await qmp.execute("blockdev-reopen", { options: [{ "node-name": node, driver: "raw", file: empty }] });
      await qmp.execute("blockdev-del", { "node-name": file });
    }
    this.log.warn(
      `device ${id}: the guest did not release it within ${timeoutMs} ms; the host file is closed and the device ` +
        "left to the guest with an empty backend",
    );
    return "cut-off";
  }

  /**
   * pc: the root bus, through ACPI hot-plug. The PCI bridges (default_bridges) get no address windows when they are
   * empty at boot, so a disk added behind one is found by the guest but its BARs cannot be assigned ("can't assign;
   * no space") and it never works. q35: a free PCIe root port (each takes one device), which does get windows.
   */
  private freeBus(buses: string, q35: boolean): string {
    if (!q35) return "pci.0";
    const list = buses.split(",").filter(Boolean);
    const used = Object.values(this.state.devices).map((d) => d.bus);
    if (list.length === 0) {
      throw new Error(`sandbox ${this.id}: no PCIe root port for hot-plug: set hypervisor.default_bridges > 0`);
    }
    const free = list.find((b) => !used.includes(b));
    if (!free)
      throw new Error(`sandbox ${this.id}: all ${list.length} PCIe root ports are in use: raise default_bridges`);
    return free;
  }
}

/**
 * Whether another start attempt can fix what QEMU's log says: another VM holds the CID we drew (vhost-vsock: a new
 * CID fixes it, there is no native VHOST_VSOCK_SET_GUEST_CID probe here), or vhost-device-vsock's socket refused
 * QEMU's connection (hybrid: seen once in hundreds of starts; the next attempt starts a fresh helper).
 */
export function qemuStartRetryable(vsock: QemuFacts["vsock"], log: string): boolean {
  if (vsock === "vhost") return /unable to set guest cid/i.test(log);
  return /-chardev socket,id=char-vsock,.*Failed to connect to .*: Connection refused/.test(log);
}
