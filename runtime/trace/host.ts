/**
 * The daemon's tracing switch (docs/operating.md#traces). Off, every hook is a flag test and OpenTelemetry is not
 * loaded; the first enable (`[sandbox] enable_tracing`, or SIGUSR1) imports host-otel.ts. While on it also drains
 * the guests it carried traces into and exports their spans, after guest-import.ts's checks.
 */
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "../log/log.ts";
import type { DrainSpansResponse } from "../protos/gen/kuasar/sandbox_pb.ts";
import { DROP_MEANING, DROP_REASONS, type DropReason, importGuestSpans } from "./guest-import.ts";
import type { HostTracer } from "./host-otel.ts";
import { DRAIN_INTERVAL_MS, MAX_SPANS_PER_DRAIN } from "./limits.ts";
import { traceIdOf } from "./traceparent.ts";
import type { ServerTracer, SpanAttributes } from "./ttrpc-server.ts";

export interface TracingOptions {
  /** `[sandbox] tracing_endpoint`: where OTLP/HTTP spans are POSTed. */
  endpoint: string;
  /** `[hypervisor.task] enable_tracing`: carry traces into guests and export the guests' spans too. */
  guests: boolean;
  version: string;
  log: Logger;
  /** Tests: spans go to this exporter instead. */
  exporter?: SpanExporter;
  /** Tests: drain guests this often instead of every DRAIN_INTERVAL_MS. */
  drainIntervalMs?: number;
  /** Tests: wait this long at most for the last spans instead of FLUSH_WAIT_MS. */
  flushWaitMs?: number;
}

/** Calls DrainSpans on one guest. */
export type DrainCall = (maxSpans: number) => Promise<DrainSpansResponse>;

/** A Start phase's sink, as the metrics observer is one (sandboxer/metrics/observer.ts). */
export interface PhaseSink {
  startPhase(phase: string, ms: number): void;
}

/** Trace ids remembered per guest: a guest's spans are taken back only in traces the host carried into it. */
const TRACES_PER_GUEST = 1024;
/** At most one line per guest this often about the spans left out of its drains. */
const DROP_REPORT_MS = 60_000;
/** How long turning tracing off or stopping the daemon waits for the last spans to go out. */
const FLUSH_WAIT_MS = 5_000;

/** The traces carried into one guest, the most recent TRACES_PER_GUEST: its spans are taken back only in these. */
export class CarriedTraces {
  private readonly ids = new Set<string>();

  /** Notes the trace of a traceparent sent into the guest. */
  add(traceparent: string): void {
    const id = traceIdOf(traceparent);
    if (!id || this.ids.has(id)) return;
    this.ids.add(id);
    if (this.ids.size > TRACES_PER_GUEST) this.ids.delete(this.ids.values().next().value as string);
  }

  has(traceId: string): boolean {
    return this.ids.has(traceId);
  }
}

/** One guest the daemon traces into, and its drains. */
export class GuestLink {
  private draining: Promise<void> | undefined;
  private readonly dropped: Record<DropReason | "queue" | "guest", number> = {
    spans: 0,
    bytes: 0,
    ids: 0,
    trace: 0,
    time: 0,
    queue: 0,
    guest: 0,
  };
  private reportedAt = 0;

  constructor(
    readonly sandboxId: string,
    private readonly call: DrainCall,
    private readonly traces: CarriedTraces,
    private readonly owner: HostTracing,
  ) {}

  /** Takes the guest's finished spans and queues what passes the checks for export; one drain at a time. */
  drain(): Promise<void> {
    this.draining ??= this.drainOnce().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  close(): void {
    this.owner.unlink(this);
  }

  private async drainOnce(): Promise<void> {
    let reply: DrainSpansResponse;
    try {
      reply = await this.call(MAX_SPANS_PER_DRAIN);
    } catch (err) {
      this.owner.log?.debug(`sandbox ${this.sandboxId}: DrainSpans: ${(err as Error).message}`);
      return;
    }
    const got = importGuestSpans(reply, (t) => this.traces.has(t), BigInt(Date.now()) * 1_000_000n);
    for (const r of DROP_REASONS) this.dropped[r] += got.dropped[r];
    this.dropped.guest += got.guestDropped;
    this.dropped.queue += this.owner.exportGuest(this.sandboxId, got.spans);
    this.report();
  }

  /** Counts of what was left out, told at most once a minute. */
  private report(): void {
    const parts = Object.entries(this.dropped).filter(([, n]) => n > 0);
    if (parts.length === 0 || Date.now() - this.reportedAt < DROP_REPORT_MS) return;
    this.reportedAt = Date.now();
    const why = (r: string) =>
      r === "queue"
        ? "export queue full"
        : r === "guest"
          ? "the guest's buffer was full"
          : DROP_MEANING[r as DropReason];
    this.owner.log?.warn(
      `sandbox ${this.sandboxId}: guest spans left out: ${parts.map(([r, n]) => `${n} (${why(r)})`).join(", ")}`,
      { sandbox: this.sandboxId },
    );
    for (const k of Object.keys(this.dropped)) this.dropped[k as keyof typeof this.dropped] = 0;
  }
}

export class HostTracing implements ServerTracer {
  private opts: TracingOptions | undefined;
  private tracer: HostTracer | undefined;
  private enabled = false;
  private timer: NodeJS.Timeout | undefined;
  private switching: Promise<void> = Promise.resolve();
  private readonly guests = new Set<GuestLink>();
  private exportErrors = 0;
  private exportErrorAt = 0;

  get on(): boolean {
    return this.enabled;
  }

  /** Whether calls into guests carry the trace (and the guests are drained). */
  get intoGuests(): boolean {
    return this.enabled && this.opts?.guests === true;
  }

  get log(): Logger | undefined {
    return this.opts?.log;
  }

  configure(opts: TracingOptions): void {
    this.opts = opts;
  }

  /** Turns tracing on (loading OpenTelemetry the first time) or off; says so in the log, as it does a failure. */
  set(on: boolean): Promise<void> {
    const next = this.switching
      .then(() => (on ? this.enable() : this.disable()))
      .catch((err: Error) => this.opts?.log.error(`tracing: cannot turn it ${on ? "on" : "off"}: ${err.message}`));
    this.switching = next;
    return next;
  }

  /** SIGUSR1: the other state. */
  toggle(): Promise<void> {
    return this.set(!this.enabled);
  }

  /** Daemon exit: the spans still queued go out (waiting at most a few seconds); guests keep theirs. */
  async shutdown(): Promise<void> {
    await this.switching;
    this.stopDraining();
    this.enabled = false;
    await within(this.opts?.flushWaitMs ?? FLUSH_WAIT_MS, this.tracer?.shutdown());
  }

  traces(_traceparent: string | undefined): boolean {
    return this.enabled;
  }

  serve<T>(
    name: string,
    traceparent: string | undefined,
    attributes: SpanAttributes,
    fn: () => Promise<T>,
  ): Promise<T> {
    return this.enabled && this.tracer ? this.tracer.server(name, traceparent, attributes, fn) : fn();
  }

  /**
   * A call into a guest: a client span under the active one, its traceparent handed to `fn` (and noted in
   * `carried`) when traces go into guests.
   */
  client<T>(
    name: string,
    attributes: SpanAttributes,
    carried: CarriedTraces | undefined,
    fn: (traceparent: string | undefined) => Promise<T>,
  ): Promise<T> {
    if (!this.enabled || !this.tracer) return fn(undefined);
    const into = this.intoGuests;
    return this.tracer.client(name, attributes, (tp) => {
      if (!into || tp === undefined) return fn(undefined);
      carried?.add(tp);
      return fn(tp);
    });
  }

  /** `metrics` as boot() hands it Start's phases, each also a span "start.<phase>" under Start's; as is when off. */
  phases<M extends PhaseSink>(metrics: M): M {
    const tracer = this.enabled ? this.tracer : undefined;
    if (!tracer) return metrics;
    return new Proxy(metrics, {
      get: (target, key, receiver) =>
        key === "startPhase"
          ? (phase: string, ms: number) => {
              target.startPhase(phase, ms);
              const now = performance.now();
              tracer.record(`start.${phase}`, now - ms, now, { "start.phase": phase });
            }
          : Reflect.get(target, key, receiver),
    });
  }

  /**
   * Registers a guest to drain while tracing is on, taking back its spans in the traces `carried` holds;
   * GuestLink.close() when its agent connection goes.
   */
  link(sandboxId: string, call: DrainCall, carried: CarriedTraces): GuestLink {
    const g = new GuestLink(sandboxId, call, carried, this);
    this.guests.add(g);
    return g;
  }

  unlink(g: GuestLink): void {
    this.guests.delete(g);
  }

  /** Queues a guest's checked spans; returns how many the export queue had no room for. */
  exportGuest(sandboxId: string, spans: Parameters<HostTracer["exportGuest"]>[1]): number {
    return this.tracer ? this.tracer.exportGuest(sandboxId, spans) : spans.length;
  }

  private async enable(): Promise<void> {
    const o = this.opts;
    if (!o) throw new Error("tracing: configure() was not called");
    if (this.enabled) return;
    if (!this.tracer) {
      const { createHostTracer } = await import("./host-otel.ts");
      this.tracer = createHostTracer({
        endpoint: o.endpoint,
        version: o.version,
        ...(o.exporter ? { exporter: o.exporter } : {}),
        onExportError: (err) => this.exportFailed(err),
      });
    }
    this.enabled = true;
    if (o.guests) {
      this.timer = setInterval(() => {
        for (const g of this.guests) void g.drain();
      }, o.drainIntervalMs ?? DRAIN_INTERVAL_MS);
      this.timer.unref();
    }
    o.log.info(
      `tracing on: spans go to ${o.endpoint} (OTLP/HTTP)${o.guests ? ", guests' spans too" : ""}; SIGUSR1 turns it off`,
    );
  }

  private async disable(): Promise<void> {
    if (!this.enabled) return;
    this.enabled = false;
    this.stopDraining();
    // What the guests and the exporter hold still goes out; a guest or a collector that does not answer is not waited on.
    const wait = this.opts?.flushWaitMs ?? FLUSH_WAIT_MS;
    await within(wait, Promise.all([...this.guests].map((g) => g.drain())));
    await within(wait, this.tracer?.flush());
    this.opts?.log.info("tracing off; SIGUSR1 turns it on");
  }

  private stopDraining(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private exportFailed(err: Error | undefined): void {
    this.exportErrors++;
    if (Date.now() - this.exportErrorAt < DROP_REPORT_MS) return;
    this.exportErrorAt = Date.now();
    this.opts?.log.warn(
      `tracing: export to ${this.opts.endpoint} failed (${this.exportErrors} failed export(s) since the last report): ` +
        `${err?.message ?? "unknown error"}; is a collector listening there?`,
    );
    this.exportErrors = 0;
  }
}

/** Waits for `p`, but not longer than `ms`. */
async function within(ms: number, p: Promise<unknown> | undefined): Promise<void> {
  if (!p) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** The daemon's one tracing switch. */
export const tracing = new HostTracing();
