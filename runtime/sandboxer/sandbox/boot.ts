import { showsAgentReady } from "../../contract/readiness.ts";
import type { Logger } from "../../log/log.ts";
import { SandboxService } from "../../protos/gen/kuasar/sandbox_pb.ts";
import { tracing } from "../../trace/host.ts";
import { dial } from "../../transport/address.ts";
import type { TtrpcClient } from "../../ttrpc/index.ts";
import { connectAgent, syncGuestClock } from "../agent.ts";
import type { Config } from "../config/schema.ts";
import { createHypervisor, defaultEnv } from "../hypervisor/registry.ts";
import { type AgentAddress, agentUrl, type Hypervisor } from "../hypervisor/vm-api.ts";
import { type LifecycleMetrics, NO_METRICS, phaseLaps } from "../metrics/observer.ts";
import { attachPodNetwork, type PodNetwork } from "../network/pod-network.ts";
import { nicQueues } from "../network/queues.ts";
import { mountShare, shareLayout } from "../storage/share.ts";
import { tail, waitForConsole } from "./console-log.ts";
import { followGuestConsole, type GuestLog } from "./guest-log.ts";
import type { PodCgroup } from "./pod-cgroup.ts";
import type { SandboxRecord } from "./record.ts";
import { createPodCgroup, podConfigOf, unwind } from "./resources.ts";
import { vmSize } from "./vm-size.ts";

/** Past this a guest that does not log the line (quieter log level) is dialled anyway. */
const AGENT_CONSOLE_WAIT_MS = 60_000;

/** A booted sandbox: its VM, the agent that answered and was set up, and what the VM runs in. */
export interface Booted {
  vm: Hypervisor;
  /** The VMM's own pid. */
  pid: number;
  agent: TtrpcClient;
  agentAddress: AgentAddress;
  /** Settles once the guest's clock was set after SetupSandbox (or that failed, logged). */
  clockSet: Promise<void>;
  /** The guest's console, forwarded into the daemon's log until the sandbox is released. */
  guestLog: GuestLog;
  net?: PodNetwork;
  cgroup?: PodCgroup;
}

/**
 * Boots a created sandbox: its pod cgroup, the VM's size, the share mounted, the pod network's taps, the VM, the
 * agent dialled (once the console says it listens, over hybrid vsock) and SetupSandbox. When `signal` aborts it
 * rejects at the next step or wait, and on any failure the VM is stopped and its taps and cgroup removed again.
 */
export async function boot(
  rec: SandboxRecord,
  dir: string,
  config: Config,
  log: Logger,
  signal?: AbortSignal,
  metrics: LifecycleMetrics = NO_METRICS,
): Promise<Booted> {
  // Checked between the steps of a boot and in its waits: a caller that gave up gets its VM stopped at once.
  const cancelled = () => signal?.aborted === true;
  const proceed = (step: string) => {
    if (cancelled()) throw new Error(`start cancelled by the caller (${step})`);
  };
  const cgroup = await createPodCgroup(rec);
  if (cgroup) log.info(`VMM and helpers run in cgroup ${cgroup.cgroup}`);
  const h = config.hypervisor;
  const size = vmSize(
    { vcpus: h.vcpus, memoryMiB: h.memory_in_mb, maxVcpus: h.default_max_vcpus },
    podConfigOf(rec)?.linux?.resources,
  );
  log.info(`VM size ${size.vcpus} vCPU / ${size.memoryMiB} MiB: ${size.why}`, {
    vcpus: size.vcpus,
    memory_mib: size.memoryMiB,
  });
  // Before the VMM exports shared/: the guest's view is read-only at the top from its first access. Undone by
  // release(), which the manager runs after a failed start.
  await mountShare(shareLayout(dir));
  proceed("share");
  const net = rec.netnsPath ? await attachPodNetwork(rec.netnsPath, nicQueues(config, size.vcpus)) : undefined;
  let vm: Hypervisor | undefined;
  let guestLog: GuestLog | undefined;
  try {
    proceed("network");
    vm = createHypervisor(
      config,
      {
        id: rec.id,
        dir,
        shareDir: shareLayout(dir).shared,
        ...(rec.netnsPath ? { netnsPath: rec.netnsPath } : {}),
        netDevices: (net?.nics ?? []).map((n) => ({ tapName: n.tap, mac: n.mac, mtu: n.mtu, queues: net?.queues })),
        vcpus: size.vcpus,
        memoryMiB: size.memoryMiB,
        ...(cgroup ? { cgroupProcs: cgroup.procsFiles() } : {}),
      },
      defaultEnv(log),
    );
    // From the VMM's first output on, the kernel's and the agent's lines also reach the daemon's log.
    guestLog = await followGuestConsole(dir, rec.id);
    const t0 = Date.now();
    // While tracing is on each phase is also a span under Start's.
    const lap = phaseLaps(tracing.phases(metrics));
    const agentTimeout = config.sandbox.agent_timeout_ms;
    const started = await vm.start();
    lap("spawn");
    proceed("VMM started");
    log.info(`vmm pid ${started.pid} started; waiting for the agent at ${agentUrl(started.agentAddress)}`, {
      vmm_pid: started.pid,
      duration_ms: Date.now() - t0,
    });
    let exited = false;
    void vm.wait().then(() => {
      exited = true;
    });
    // vhost-device-vsock 0.3 can wedge for good (accepts, never answers CONNECT) when dialled before the guest's
    // vsock driver is up; hold the first dial until the guest agent says it listens, falling back to dialling.
    if (started.agentAddress.kind === "hvsock") {
      await waitForConsole(
        started.consoleLog,
        showsAgentReady,
        Math.min(AGENT_CONSOLE_WAIT_MS, agentTimeout),
        () => !exited && !cancelled(),
      );
      proceed("waiting for the agent");
      lap("boot");
    }
    const agent = await connectAgent(() => dial(agentUrl(started.agentAddress), { timeoutMs: 2000 }), {
      deadlineMs: Math.max(1000, t0 + agentTimeout - Date.now()),
      alive: () => !exited && !cancelled(),
      calls: metrics,
    }).catch(async (err: Error) => {
      proceed("waiting for the agent");
      throw new Error(
        `${err.message} (sandbox.agent_timeout_ms = ${agentTimeout} from the VMM's start)\n` +
          `last console lines (${started.consoleLog}):\n${await tail(started.consoleLog, 15)}`,
      );
    });
    log.info(`agent answered ${((Date.now() - t0) / 1000).toFixed(1)} s after the VMM started`, {
      vmm_pid: started.pid,
      duration_ms: Date.now() - t0,
    });
    lap("agent");
    const setupAt = Date.now();
    await agent
      .service(SandboxService)
      .setupSandbox(
        {
          config: { typeUrl: "PodSandboxConfig", value: Buffer.from(JSON.stringify(rec.podConfig ?? {})) },
          interfaces: net?.interfaces ?? [],
          routes: net?.routes ?? [],
          neighbors: net?.neighbors ?? [],
        },
        signal ? { signal } : {},
      )
      .catch((err: Error) => {
        agent.close();
        proceed("SetupSandbox");
        throw err;
      });
    log.debug(`SetupSandbox answered in ${Date.now() - setupAt} ms`);
    if (cancelled()) agent.close();
    proceed("SetupSandbox");
    lap("setup");
    // The guest's clock starts from the RTC (whole seconds) or, without one, the epoch. It is set while Start's reply
    // goes back, and the sandbox's task API holds every call until then (serve.ts): no container runs before it.
    const clockAt = Date.now();
    const clockSet = syncGuestClock(agent).then(
      (offsetNs) =>
        log.debug(
          `guest clock: ${Number(offsetNs / 1000n) / 1000} ms behind the host, set in ${Date.now() - clockAt} ms`,
        ),
      (e: Error) => log.warn(`clock sync: ${e.message}; the guest keeps its own clock until the next sync`),
    );
    return {
      vm,
      pid: started.pid,
      agent,
      agentAddress: started.agentAddress,
      clockSet,
      guestLog,
      ...(net ? { net } : {}),
      ...(cgroup ? { cgroup } : {}),
    };
  } catch (err) {
    await unwind({ vm, guestLog, net, cgroup }, log);
    throw err;
  }
}
