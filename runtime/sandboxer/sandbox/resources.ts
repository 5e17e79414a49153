import { rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../../log/log.ts";
import { killSandboxProcesses } from "../hypervisor/leftovers.ts";
import type { Hypervisor } from "../hypervisor/vm-api.ts";
import { detachPodNetwork, type PodNetwork } from "../network/pod-network.ts";
import { type PodConfigJson, writeShareFiles } from "../share-files.ts";
import { createShareDirs, shareLayout, unmountAllUnder } from "../storage/share.ts";
import { ContainerRecords } from "../task-proxy/records.ts";
import type { GuestLog } from "./guest-log.ts";
import { PodCgroup } from "./pod-cgroup.ts";
import type { SandboxRecord } from "./record.ts";
import { runtimeStateOf } from "./runtime-state.ts";

/*
 * What a sandbox holds on the host, in the order it is acquired: the share (at Create; mounted at Start), the pod
 * cgroup, one tap per pod veth, the VM with its helpers, the task socket, and one record per container's storage.
 */

/** The taps of a pod network: what removing them needs. */
export type PodTaps = Pick<PodNetwork, "nsPath" | "nics">;

/** The CRI PodSandboxConfig the controller stored (protobuf JSON, from a config it parsed). */
export function podConfigOf(rec: SandboxRecord): PodConfigJson | undefined {
  return rec.podConfig as PodConfigJson | undefined;
}

export function podCgroupOf(rec: SandboxRecord): PodCgroup | undefined {
  const parent = podConfigOf(rec)?.linux?.cgroupParent;
  return parent ? PodCgroup.resolve(parent, rec.id) : undefined;
}

/** Creates the pod cgroup the VMM and its helpers will run in, when the pod has a cgroup parent. */
export async function createPodCgroup(rec: SandboxRecord): Promise<PodCgroup | undefined> {
  const cgroup = podCgroupOf(rec);
  if (!cgroup) return undefined;
  await cgroup.create().catch((err: Error) => {
    throw new Error(`sandbox ${rec.id}: cannot create its pod cgroup ${cgroup.cgroup}: ${err.message}`);
  });
  return cgroup;
}

/** The share's directories and the pod's hostname, hosts and resolv.conf in it, for a new sandbox. */
export async function prepareShare(rec: SandboxRecord, dir: string): Promise<void> {
  const share = shareLayout(dir);
  await createShareDirs(share);
  await writeShareFiles(share.mounts, podConfigOf(rec));
}

export function containerRecords(dir: string, log: Logger): ContainerRecords {
  return new ContainerRecords(path.join(dir, "containers"), shareLayout(dir), log);
}

export function taskSocketOf(dir: string): string {
  return path.join(dir, "task.sock");
}

/** The taps sandbox.json records for a pod with a network namespace; throws naming a malformed field. */
export function recordedTaps(rec: SandboxRecord): PodTaps | undefined {
  if (!rec.netnsPath) return undefined;
  const nics = runtimeStateOf(rec)?.nics;
  return nics?.length ? { nsPath: rec.netnsPath, nics } : undefined;
}

/**
 * Undoes a start that failed or was cancelled: the VM is stopped (its console's last lines still forwarded to the
 * log), then its taps and the pod cgroup go. The share's mounts are left to release(), which the manager runs after
 * a failed start.
 */
export async function unwind(
  held: {
    vm?: Hypervisor | undefined;
    guestLog?: GuestLog | undefined;
    net?: PodTaps | undefined;
    cgroup?: PodCgroup | undefined;
  },
  log: Logger,
): Promise<void> {
  if (held.vm) {
    await held.vm.stop(0).catch(() => undefined);
    await held.vm.cleanup().catch(() => undefined);
  }
  await held.guestLog?.stop();
  if (held.net) await detachPodNetwork(held.net).catch(() => undefined);
  await held.cgroup?.remove().catch((e: Error) => log.warn(e.message));
}

/**
 * Frees what a sandbox whose VM is gone still holds, from its records whatever state it is in: the taps (`net`, the
 * ones this daemon attached, or else those sandbox.json records), every mount under its directory, the pod cgroup and
 * the task socket. Unreadable taps are reported after the rest is done.
 */
export async function releaseHost(rec: SandboxRecord, dir: string, net: PodTaps | undefined): Promise<void> {
  let unreadable: Error | undefined;
  if (!net) {
    try {
      net = recordedTaps(rec);
    } catch (err) {
      unreadable = err as Error;
    }
  }
  if (net) await detachPodNetwork(net);
  // The share's own mounts and anything a record did not name: nothing stays mounted under the sandbox.
  await unmountAllUnder(dir);
  await podCgroupOf(rec)?.remove();
  await rm(taskSocketOf(dir), { force: true });
  if (unreadable) throw new Error(`${unreadable.message}; any taps it made in ${rec.netnsPath} are left there`);
}

/**
 * A sandbox directory whose sandbox.json cannot be read: its VMM (named by the pid file the driver wrote) and
 * helpers are killed, and its mounts freed from the container records and then whatever is left under it.
 */
export async function discardDir(dir: string, log: Logger): Promise<void> {
  await killSandboxProcesses(dir, log);
  await containerRecords(dir, log).releaseAll();
  await unmountAllUnder(dir);
}
