import type { SandboxSpec } from "./vm-api.ts";

export interface NicArgs {
  /** Index of the NIC in sandbox.netDevices. */
  index: number;
  tapName: string;
  mac: string;
  /** The fd numbers the VMM sees (3, 4, ...), empty when it opens the tap by name. */
  childFds: number[];
}

/**
 * Lays out the NICs' tap fds as the VMM's fd 3, 4, ... and says whether the VMM must run in the pod netns (a NIC
 * without fds is opened by name, which only works inside the namespace that holds the tap).
 */
export function layoutNics(sandbox: SandboxSpec): { nics: NicArgs[]; hostFds: number[]; netnsPath?: string } {
  const hostFds: number[] = [];
  const nics = sandbox.netDevices.map((n, index) => {
    const childFds = (n.fds ?? []).map((fd) => {
      hostFds.push(fd);
      return 2 + hostFds.length;
    });
    return { index, tapName: n.tapName, mac: n.mac, childFds };
  });
  const byName = nics.filter((n) => n.childFds.length === 0);
  if (byName.length > 0 && !sandbox.netnsPath) {
    throw new Error(
      `sandbox ${sandbox.id}: NIC ${byName[0]!.tapName} has no tap fds and no netnsPath is given to open it in`,
    );
  }
  return { nics, hostFds, ...(byName.length > 0 ? { netnsPath: sandbox.netnsPath } : {}) };
}
