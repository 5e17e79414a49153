import { HYPERVISORS } from "../hypervisor/names.ts";
import type { ProcRef } from "../hypervisor/process.ts";
import type { AgentAddress, HelperState, HypervisorState } from "../hypervisor/vm-api.ts";
import type { Nic } from "../network/pod-network.ts";
import {
  arrayOf,
  type Check,
  integer,
  object,
  oneOf,
  optional,
  recordOf,
  scalar,
  string,
  tagged,
} from "./json-shape.ts";
import type { SandboxRecord } from "./record.ts";

/** The launcher's part of sandbox.json (`runtime`): how to reattach to the VM and its agent, which taps to remove. */
export interface RuntimeState {
  vm: HypervisorState;
  agent: AgentAddress;
  /** The taps made for the pod's veths, removed from the pod netns at release. */
  nics: Nic[];
}

const procRef = object<ProcRef>({ pid: integer(1), startTime: integer(0) });

const agentAddress = tagged<AgentAddress>("kind", {
  hvsock: object<Extract<AgentAddress, { kind: "hvsock" }>>({
    kind: oneOf(["hvsock"]),
    udsPath: string,
    port: integer(0),
  }),
  vsock: object<Extract<AgentAddress, { kind: "vsock" }>>({
    kind: oneOf(["vsock"]),
    cid: integer(0),
    port: integer(0),
  }),
});

const hypervisorState = object<HypervisorState>({
  kind: oneOf(HYPERVISORS),
  id: string,
  dir: string,
  vmm: optional(procRef),
  helpers: arrayOf(object<HelperState>({ name: string, pid: integer(1), startTime: integer(0) })),
  agentAddress: optional(agentAddress),
  consoleLog: string,
  console: optional(object<NonNullable<HypervisorState["console"]>>({ socket: string, maxBytes: integer(0) })),
  controlSocket: string,
  files: arrayOf(string),
  devices: recordOf(object<HypervisorState["devices"][string]>({ node: optional(string), bus: optional(string) })),
  extra: recordOf(scalar),
  cgroupProcs: optional(arrayOf(string)),
  helperUid: optional(integer(0)),
  helperDirs: optional(arrayOf(string)),
});

const nic = object<Nic>({ tap: string, veth: string, ifindex: integer(0), mac: string, mtu: integer(0) });

const runtimeState: Check<RuntimeState> = object<RuntimeState>({
  vm: hypervisorState,
  agent: agentAddress,
  nics: arrayOf(nic),
});

/**
 * The record's runtime state, checked field by field: undefined for a sandbox that never started. A corrupt file, or
 * one another version wrote, throws an error naming the field instead of failing somewhere in recovery or release.
 */
export function runtimeStateOf(rec: SandboxRecord): RuntimeState | undefined {
  if (rec.runtime === undefined) return undefined;
  try {
    return runtimeState(rec.runtime, "runtime");
  } catch (err) {
    throw new Error(
      `sandbox ${rec.id}: its sandbox.json is not one this vmm-sandboxer can use: ${(err as Error).message}`,
    );
  }
}
