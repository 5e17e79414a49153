import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { SandboxRecord } from "../sandbox/record.ts";
import {
  type LifecycleMetrics,
  RECOVERY_OUTCOMES,
  type RecoveryOutcome,
  START_PHASES,
  type StartPhase,
} from "./observer.ts";
import { cpuSeconds, memoryBytes } from "./process-stats.ts";

const PREFIX = "kuasar_vmm_";
const STATES: readonly SandboxRecord["state"][] = ["created", "running", "stopped"];
/** Seconds: a KVM boot takes under one, a TCG boot tens; a Stop that escalates to a kill waits out its timeout. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** What the metrics read at scrape time: the sandboxes the manager holds. */
export interface SandboxSource {
  list(): readonly SandboxRecord[];
}

/** The running sandboxes that have a VMM pid, as [id, pid]. */
const vmms = (source: SandboxSource | undefined): Array<[string, number]> =>
  (source?.list() ?? []).flatMap((r) => (r.state === "running" && r.pid ? [[r.id, r.pid] as [string, number]] : []));

/**
 * The daemon's metrics: what the lifecycle reports (LifecycleMetrics), what the manager holds and the VMMs' /proc
 * numbers read at scrape time, and prom-client's default metrics of the daemon's own process.
 */
export class DaemonMetrics implements LifecycleMetrics {
  readonly registry = new Registry();
  private source: SandboxSource | undefined;
  private readonly startDuration: Histogram<"phase">;
  private readonly stopDuration: Histogram;
  private readonly recoveries: Counter<"outcome">;
  private readonly agentErrors: Counter<"method" | "code">;

  constructor(opts: { proc?: string; defaults?: boolean } = {}) {
    const registers = [this.registry];
    const proc = opts.proc ?? "/proc";
    const source = () => this.source;
    new Gauge({
      name: `${PREFIX}sandboxes`,
      help: "Sandboxes the daemon holds, by state.",
      labelNames: ["state"],
      registers,
      collect() {
        const list = source()?.list() ?? [];
        for (const state of STATES) this.set({ state }, list.filter((r) => r.state === state).length);
      },
    });
    this.startDuration = new Histogram({
      name: `${PREFIX}sandbox_start_duration_seconds`,
      help:
        "Sandbox Start by phase: spawn (the VMM started), boot (the guest until its agent listens; hybrid vsock " +
        "only), agent (dialled and answering), setup (SetupSandbox and clock sync), total (the whole Start).",
      labelNames: ["phase"],
      buckets: BUCKETS,
      registers,
    });
    this.stopDuration = new Histogram({
      name: `${PREFIX}sandbox_stop_duration_seconds`,
      help: "Stop of a running sandbox, from the request until its VM is gone and its host resources released.",
      buckets: BUCKETS,
      registers,
    });
    this.recoveries = new Counter({
      name: `${PREFIX}recoveries_total`,
      help:
        "Running sandboxes found at daemon start: recovered (reattached), lost (the VM had exited), killed (the VM " +
        "could not be kept and was stopped).",
      labelNames: ["outcome"],
      registers,
    });
    this.agentErrors = new Counter({
      name: `${PREFIX}agent_call_errors_total`,
      help:
        "Calls from the daemon to a guest agent that failed or timed out, by method and ttrpc status code (calls cut " +
        "short by the VM going away or by their caller are not counted).",
      labelNames: ["method", "code"],
      registers,
    });
    new Counter({
      name: `${PREFIX}vmm_cpu_seconds_total`,
      help: "CPU time (user and system) of each running sandbox's VMM process, read from /proc at scrape time.",
      labelNames: ["sandbox"],
      registers,
      async collect() {
        const read = await Promise.all(
          vmms(source()).map(async ([id, pid]) => [id, await cpuSeconds(pid, proc)] as const),
        );
        this.reset();
        for (const [sandbox, s] of read) if (s !== undefined) this.inc({ sandbox }, s);
      },
    });
    new Gauge({
      name: `${PREFIX}vmm_memory_bytes`,
      help: "Memory of each running sandbox's VMM process from smaps_rollup: rss, and pss (shared pages divided).",
      labelNames: ["sandbox", "kind"],
      registers,
      async collect() {
        const read = await Promise.all(
          vmms(source()).map(async ([id, pid]) => [id, await memoryBytes(pid, proc)] as const),
        );
        this.reset();
        for (const [sandbox, m] of read) {
          if (!m) continue; // exited since the list was taken
          this.set({ sandbox, kind: "rss" }, m.rss);
          this.set({ sandbox, kind: "pss" }, m.pss);
        }
      },
    });
    // Zero from the start, so rate() and absent-series alerts work before the first event.
    for (const outcome of RECOVERY_OUTCOMES) this.recoveries.inc({ outcome }, 0);
    for (const phase of START_PHASES) this.startDuration.zero({ phase });
    if (opts.defaults ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** The manager whose sandboxes are counted and measured at each scrape. */
  watch(source: SandboxSource): void {
    this.source = source;
  }

  startPhase(phase: StartPhase, ms: number): void {
    this.startDuration.observe({ phase }, ms / 1000);
  }

  stopped(ms: number): void {
    this.stopDuration.observe(ms / 1000);
  }

  recovery(outcome: RecoveryOutcome): void {
    this.recoveries.inc({ outcome });
  }

  agentCallFailed(method: string, code: string): void {
    this.agentErrors.inc({ method, code });
  }
}
