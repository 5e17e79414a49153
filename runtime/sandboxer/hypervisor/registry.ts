/**
 * The VMMs the daemon drives: the one list of their descriptors. The configuration's keys and rules, the doctor's
 * per-VMM checks and the drivers are all reached through it; names.ts holds the same names for code that needs no
 * driver.
 */
import type { Logger } from "../../log/log.ts";
import { CLOUD_HYPERVISOR } from "./cloud-hypervisor/descriptor.ts";
import type { Vmm } from "./descriptor.ts";
import { realProbes } from "./host.ts";
import type { HypervisorKind } from "./names.ts";
import { QEMU } from "./qemu/descriptor.ts";
import { STRATOVIRT } from "./stratovirt/descriptor.ts";
import { newState } from "./vm.ts";
import type { DriverEnv, Hypervisor, HypervisorState, SandboxSpec } from "./vm-api.ts";

export const VMMS = {
  qemu: QEMU,
  "cloud-hypervisor": CLOUD_HYPERVISOR,
  stratovirt: STRATOVIRT,
} satisfies Record<HypervisorKind, { name: HypervisorKind }>;

type Registered = (typeof VMMS)[HypervisorKind];
type ConfigOf<V> = V extends Vmm<infer C> ? C : never;
type Intersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never;

/** The daemon's configuration: the common keys and every VMM's own (each holds its default under another VMM). */
export type Config = Intersection<ConfigOf<Registered>>;

/** The descriptor of the VMM a configuration or a recorded state names. */
export function vmmOf(kind: HypervisorKind): Vmm<Config> {
  return VMMS[kind];
}

export function defaultEnv(log: Logger): DriverEnv {
  return { probes: realProbes, log, pollMs: 250 };
}

export function createHypervisor(config: Config, sandbox: SandboxSpec, env: DriverEnv): Hypervisor {
  const kind = config.hypervisor.type;
  return new (vmmOf(kind).driver)(newState(kind, sandbox), env, { config, sandbox });
}

/**
 * Reattaches to a VM after a daemon restart: the VMM must still be the recorded process and its control socket
 * must answer within a few seconds; otherwise this rejects with the reason and the caller cleans up.
 */
export function recoverHypervisor(state: HypervisorState, env: DriverEnv): Promise<Hypervisor> {
  return new (vmmOf(state.kind).driver)(structuredClone(state), env).reattach();
}
