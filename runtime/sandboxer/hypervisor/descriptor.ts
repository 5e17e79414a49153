/**
 * What one VMM's folder gives the rest of the daemon: its name, its configuration keys and rules, its driver and its
 * host checks. Each hypervisor/<vmm>/descriptor.ts exports one; registry.ts lists them.
 */
import type { CommonConfig, CommonDefaults } from "../config/common-tables.ts";
import type { ConfigWith, VmmKeys } from "../config/vmm-keys.ts";
import type { HostProbes } from "./host.ts";
import type { CheckProbes, Finding } from "./host-checks.ts";
import type { HypervisorKind } from "./names.ts";
import type { DriverEnv, Hypervisor, HypervisorState, SandboxSpec } from "./vm-api.ts";

/** A VMM as seen by code holding a configuration of type C (its own, or the daemon's whole Config). */
export interface Vmm<C extends CommonConfig> {
  name: HypervisorKind;
  /** The [hypervisor] key naming its binary. One other than path says by itself that a file is for this VMM. */
  binaryKey: string;
  /** The [hypervisor] key naming its firmware image (empty: none). */
  firmwareKey: string;
  config: {
    /** The keys only it reads. */
    keys: VmmKeys;
    /** The optional shared keys and tables of common-tables.ts it reads: "hypervisor.machine_type", "hypervisor.virtiofsd". */
    uses: readonly string[];
    /** Its defaults for common keys, where they differ from the tables' (its shipped config.toml). */
    defaults: CommonDefaults;
    /** Rules between keys once each value passed its own check; `set` tells the keys the file set. */
    crossCheck(config: C, set: (key: string) => boolean, problems: string[]): void;
    /** Checks against the host's files in etcDir, run by loadConfig (parseConfig looks at the text alone). */
    checkHost?(config: C, etcDir: string): Promise<string[]>;
  };
  /** Its driver: given the config and sandbox to start a VM, or only a recorded state to reattach to. */
  driver: new (
    state: HypervisorState,
    env: DriverEnv,
    input?: { config: C; sandbox: SandboxSpec },
  ) => Hypervisor & { reattach(): Promise<Hypervisor> };
  /** What `vmm-sandboxer check` asks of the host for it, decided as the driver decides. */
  doctor: {
    /** How to install it, for a fix line. */
    installHint: string;
    kvm(config: C, probes: HostProbes): Promise<Finding>;
    vsock(config: C, probes: CheckProbes): Promise<Finding>;
    /** After its binary ran and gave its version: what else this configuration needs of that build. */
    binary?(config: C, probes: CheckProbes, binary: string, version: string): Promise<Finding>;
    /** The helper that serves the share to the guest, if it needs one. */
    shareFs(config: C, probes: CheckProbes): Promise<Finding>;
  };
}

/** A descriptor whose functions take the configuration its own keys make. */
export function defineVmm<const K extends VmmKeys>(vmm: Vmm<ConfigWith<K>> & { config: { keys: K } }) {
  return vmm;
}
