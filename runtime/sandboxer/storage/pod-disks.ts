import type { DeviceRemoval, DiskSpec } from "../hypervisor/vm-api.ts";
import type { DiskHost } from "./block.ts";

interface Held {
  serial: string;
  readOnly: boolean;
  users: number;
}

/**
 * One sandbox's disks by host path. A raw block volume two containers of a pod use is one disk in the VM (QEMU's
 * image lock refuses a second writer of the same file, and two guest disks of one device would not share a cache):
 * the second container gets the first one's serial, and the disk leaves the VM with its last user. A disk another
 * container holds read-only cannot be handed out writable. Serials it did not plug (an earlier daemon's) pass through.
 */
export class PodDisks implements DiskHost {
  private readonly byPath = new Map<string, Held>();
  private readonly pathOf = new Map<string, string>();

  constructor(private readonly vm: DiskHost) {}

  async hotplugDisk(disk: DiskSpec): Promise<{ id: string; serial: string }> {
    const held = this.byPath.get(disk.path);
    if (held) {
      if (held.readOnly && !disk.readOnly) {
        throw new Error(
          `${disk.path} is already in the VM read-only for another container of this pod; a container that writes ` +
            "it must be created first (or give every container write access to the device)",
        );
      }
      held.users++;
      return { id: held.serial, serial: held.serial };
    }
    const r = await this.vm.hotplugDisk(disk);
    this.byPath.set(disk.path, { serial: r.serial, readOnly: disk.readOnly, users: 1 });
    this.pathOf.set(r.serial, disk.path);
    return r;
  }

  async removeDevice(id: string, opts?: { timeoutMs?: number }): Promise<DeviceRemoval> {
    const path = this.pathOf.get(id);
    const held = path === undefined ? undefined : this.byPath.get(path);
    if (held && path !== undefined) {
      // Another container still uses it: this one's share of it is all that goes.
      if (--held.users > 0) return "removed";
      this.byPath.delete(path);
      this.pathOf.delete(id);
    }
    return this.vm.removeDevice(id, opts);
  }
}
