import type { Logger } from "../../log/log.ts";
import { dial } from "../../transport/address.ts";
import type { TtrpcClient } from "../../ttrpc/index.ts";
import { connectAgent, syncGuestClock } from "../agent.ts";
import { killSandboxProcesses } from "../hypervisor/leftovers.ts";
import { defaultEnv, recoverHypervisor } from "../hypervisor/registry.ts";
import { agentUrl, type Hypervisor } from "../hypervisor/vm-api.ts";
import type { AgentCallObserver } from "../metrics/observer.ts";
import { isMountPoint } from "../storage/mount.ts";
import { shareLayout } from "../storage/share.ts";
import type { SandboxRecord } from "./record.ts";
import { type PodTaps, recordedTaps, unwind } from "./resources.ts";
import { type RuntimeState, runtimeStateOf } from "./runtime-state.ts";

/** After a daemon restart a live agent answers at once: fail fast and clean up instead. */
export const RECOVER_AGENT_DEADLINE_MS = 3_000;

export type Reattached =
  | { ok: true; vm: Hypervisor; agent: TtrpcClient; net?: PodTaps }
  | { ok: false; reason: string };

/**
 * After a daemon restart: reattaches to the VM sandbox.json records and dials its agent. A VM that cannot be kept is
 * stopped (or, when sandbox.json does not say what it is, its processes killed) and the reason returned. `log` is the
 * sandbox's own (its id in the target and the fields).
 */
export async function reattach(
  rec: SandboxRecord,
  dir: string,
  log: Logger,
  calls?: AgentCallObserver,
): Promise<Reattached> {
  let state: RuntimeState | undefined;
  try {
    state = runtimeStateOf(rec);
  } catch (err) {
    await killSandboxProcesses(dir, log);
    return { ok: false, reason: (err as Error).message };
  }
  if (!state) {
    await killSandboxProcesses(dir, log);
    return { ok: false, reason: "sandbox.json has no VM state" };
  }
  let vm: Hypervisor;
  try {
    vm = await recoverHypervisor(state.vm, defaultEnv(log));
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  if (!(await isMountPoint(shareLayout(dir).mounts))) {
    // Started by a version whose share the guest could write where the host mounts: not kept running.
    await unwind({ vm }, log);
    return { ok: false, reason: "its share has the old, guest-writable layout (started by an earlier vmm-sandboxer)" };
  }
  let agent: TtrpcClient;
  try {
    agent = await connectAgent(() => dial(agentUrl(state.agent), { timeoutMs: 1000 }), {
      deadlineMs: RECOVER_AGENT_DEADLINE_MS,
      calls,
    });
  } catch (err) {
    await unwind({ vm }, log);
    return { ok: false, reason: (err as Error).message };
  }
  const net = recordedTaps(rec);
  await syncGuestClock(agent).catch((e: Error) => log.debug(`clock sync: ${e.message}`));
  return { ok: true, vm, agent, ...(net ? { net } : {}) };
}
