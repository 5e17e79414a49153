import type { Duplex } from "node:stream";
import type { DescService } from "@bufbuild/protobuf";
import { AGENT_PORT } from "../contract/ports.ts";
import { SandboxService } from "../protos/gen/kuasar/sandbox_pb.ts";
import { CarriedTraces, type GuestLink, tracing } from "../trace/host.ts";
import { TRACEPARENT } from "../trace/traceparent.ts";
import { type CallOptions, Code, type ServiceClient, TtrpcClient, TtrpcError } from "../ttrpc/index.ts";
import { type AgentCallObserver, NO_METRICS } from "./metrics/observer.ts";

/**
 * Calls that run for the connection's life in the background (polls, clock syncs, span drains): no client span,
 * which would hang under whatever span happened to start the loop.
 */
const UNTRACED = new Set(
  ["Check", "SyncClock", "GetEvents", "DrainSpans"].map((m) => `${SandboxService.typeName}/${m}`),
);
/** How long a drain of the guest's spans may take before it is left for the next one. */
const DRAIN_TIMEOUT_MS = 2000;

type UnaryStub = (request: unknown, options?: CallOptions) => Promise<unknown>;

/**
 * A client of a guest agent. It tells its observer of each unary call the agent failed or left unanswered (not
 * counted: calls cut short by the connection closing, as the VM went away and its exit is reported elsewhere, or by
 * their caller). While tracing is on each call gets a client span under the caller's, and, with guests traced, the
 * span's traceparent in the request's metadata; the guest's spans are drained back (traceGuest).
 */
export class AgentClient extends TtrpcClient {
  private gone = false;
  private observer: AgentCallObserver | undefined;
  private guest: GuestLink | undefined;
  /** From the first call on: SetupSandbox is traced before the connection is tied to its sandbox. */
  private readonly carried = new CarriedTraces();

  /** Starts telling `calls` of failed calls: once the agent answered, as the retries while it boots are no errors. */
  observe(calls: AgentCallObserver | undefined): void {
    // With metrics off the stubs stay unwrapped.
    this.observer = calls === NO_METRICS ? undefined : calls;
  }

  /** Ties this connection to its sandbox: while tracing goes into guests, the guest's spans are drained back. */
  traceGuest(sandboxId: string): void {
    this.guest?.close();
    const drain = super.service(SandboxService).drainSpans;
    this.guest = tracing.link(
      sandboxId,
      (maxSpans) => drain({ maxSpans }, { timeoutMs: DRAIN_TIMEOUT_MS }),
      this.carried,
    );
  }

  override onClose(err: Error | undefined): void {
    this.gone = true;
    this.guest?.close();
    super.onClose(err);
  }

  override service<S extends DescService>(service: S, name: string = service.typeName): ServiceClient<S> {
    const stubs = super.service(service, name);
    // With metrics and tracing off the stubs stay unwrapped.
    if (!this.observer && !tracing.on) return stubs;
    const wrapped = stubs as Record<string, unknown>;
    for (const desc of service.methods) {
      if (desc.methodKind !== "unary") continue;
      const call = wrapped[desc.localName] as UnaryStub;
      const method = `${name}/${desc.name}`;
      // Shutdown powers the guest off: what its span buffer holds is drained first.
      const powersOff = desc.name === "Shutdown" && name.startsWith("containerd.task.");
      const traced = !UNTRACED.has(method);
      wrapped[desc.localName] = (request: unknown, options?: CallOptions) =>
        this.traced(method, traced, powersOff, (opts) => call(request, opts), options).catch((err: unknown) => {
          if (this.observer && !this.gone && !options?.signal?.aborted) this.failed(method, err);
          throw err;
        });
    }
    return stubs;
  }

  private async traced(
    method: string,
    traced: boolean,
    powersOff: boolean,
    call: (options?: CallOptions) => Promise<unknown>,
    options: CallOptions | undefined,
  ): Promise<unknown> {
    if (powersOff && this.guest && tracing.intoGuests) await this.guest.drain();
    if (!traced || !tracing.on) return call(options);
    const slash = method.lastIndexOf("/");
    const attributes = {
      "rpc.system": "ttrpc",
      "rpc.service": method.slice(0, slash),
      "rpc.method": method.slice(slash + 1),
      ...(this.guest ? { "sandbox.id": this.guest.sandboxId } : {}),
    };
    return tracing.client(method, attributes, this.carried, (traceparent) =>
      call(traceparent ? { ...options, metadata: { ...options?.metadata, [TRACEPARENT]: traceparent } } : options),
    );
  }

  private failed(method: string, err: unknown): void {
    // The code comes from the guest: only the known names become label values, so it cannot mint new series.
    const code = err instanceof TtrpcError && err.code in Code ? err.codeName : "Unknown";
    this.observer?.agentCallFailed(method, code);
  }
}

/** Ties a connection from connectAgent to its sandbox for tracing (AgentClient.traceGuest). */
export function traceGuest(agent: TtrpcClient, sandboxId: string): void {
  if (agent instanceof AgentClient) agent.traceGuest(sandboxId);
}

/**
 * Connects to the guest agent, retrying until it answers Check or the deadline passes. A VM that exits, or
 * a guest that never listens, is reported with the last error so the caller can add the console tail. From then on
 * `calls` hears of the calls the agent fails.
 */
export async function connectAgent(
  dial: () => Promise<Duplex>,
  opts: { deadlineMs: number; retryMs?: number; alive?: () => boolean; calls?: AgentCallObserver },
): Promise<TtrpcClient> {
  const until = Date.now() + opts.deadlineMs;
  let last = "no attempt made";
  while (Date.now() < until) {
    if (opts.alive && !opts.alive()) throw new Error(`the VM exited before the agent answered (last error: ${last})`);
    let client: AgentClient | undefined;
    try {
      client = new AgentClient(await dial());
      await client.service(SandboxService).check({ service: "" }, { timeoutMs: Math.min(5000, until - Date.now()) });
      client.observe(opts.calls);
      return client;
    } catch (err) {
      client?.close();
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, opts.retryMs ?? 100));
  }
  throw new Error(
    `the agent did not answer on vsock port ${AGENT_PORT} within ${opts.deadlineMs / 1000} s (last error: ${last})`,
  );
}

/** Rounds per clock measurement; the one with the shortest round trip is used (NTP's clock filter). */
const CLOCK_SAMPLES = 5;
/** Offsets up to this are left alone: stepping by less than the measurement noise would only add jitter. */
const CLOCK_STEP_NS = 1_000_000n;
/** A round trip this short pins the offset to within CLOCK_STEP_NS (half the round trip). */
const PRECISE_RTT_NS = 2n * CLOCK_STEP_NS;

/** How closely a Date.now() tick must be pinned to the monotonic clock; a wider window (preempted) tries the next. */
const ANCHOR_NS = 10_000n;

/**
 * The host's wall clock in nanoseconds. Date.now() counts whole milliseconds, so the instant it ticks over is pinned
 * to the monotonic clock (to within ANCHOR_NS, spinning up to a few ms) and readings count from there, exact to
 * microseconds. A fresh one per measurement keeps the monotonic clock's drift from the wall clock out of it.
 */
export function hostClock(): () => bigint {
  for (let attempt = 0; ; attempt++) {
    // The tick falls after the read before the last unchanged Date.now() and before the read after the changed one.
    let before = process.hrtime.bigint();
    const start = Date.now();
    for (;;) {
      const h1 = process.hrtime.bigint();
      const ms = Date.now();
      const h2 = process.hrtime.bigint();
      if (ms !== start) {
        if (h2 - before > ANCHOR_NS && attempt < 5) break;
        const anchor = (before + h2) / 2n;
        const base = BigInt(ms) * 1_000_000n;
        return () => base + (process.hrtime.bigint() - anchor);
      }
      before = h1;
    }
  }
}

export interface ClockSample {
  /** Host time minus guest time at the same instant; positive: the guest is behind and must step forward. */
  offsetNs: bigint;
  /** The round trip without the guest's own handling time: the offset is exact to within half of it. */
  rttNs: bigint;
}

/**
 * One SyncClock round with Delta 0, NTP-style: with host send/receive times t0, t3 and the guest's arrive/send times
 * g1, g2 (ClientArriveTime and ServerSendTime, as Kuasar's guest fills them), the guest's clock read g1 at about host
 * time t0 + rtt/2, so offset = ((t0 - g1) + (t3 - g2)) / 2.
 */
export async function sampleClock(client: TtrpcClient, now = hostClock()): Promise<ClockSample> {
  const t0 = now();
  const r = await client.service(SandboxService).syncClock({ ClientSendTime: t0 }, { timeoutMs: 5000 });
  const t3 = now();
  const held = r.ServerSendTime - r.ClientArriveTime;
  // The reply is attacker input: times that run backwards or outlast the whole round trip measure nothing.
  if (held < 0n || held > t3 - t0) {
    throw new Error(
      `the guest's SyncClock reply is inconsistent (arrive ${r.ClientArriveTime} ns, send ${r.ServerSendTime} ns, ` +
        `round trip ${t3 - t0} ns): clock left alone`,
    );
  }
  return { offsetNs: (t0 - r.ClientArriveTime + (t3 - r.ServerSendTime)) / 2n, rttNs: t3 - t0 - held };
}

/**
 * The best of up to `samples` rounds: the one with the shortest round trip. A round within PRECISE_RTT_NS ends it
 * early, since its offset is already exact to within the step threshold.
 */
async function measureClock(client: TtrpcClient, samples = CLOCK_SAMPLES): Promise<ClockSample> {
  const now = hostClock();
  let best = await sampleClock(client, now);
  for (let i = 1; i < samples && best.rttNs > PRECISE_RTT_NS; i++) {
    const s = await sampleClock(client, now);
    if (s.rttNs < best.rttNs) best = s;
  }
  return best;
}

/** The guest clock's offset from the host's (ns), from the best of several rounds. */
export async function measureClockDelta(client: TtrpcClient, samples = CLOCK_SAMPLES): Promise<bigint> {
  return (await measureClock(client, samples)).offsetNs;
}

/**
 * Measures the guest clock and steps it by the offset (clock_settime in the guest, to the nanosecond) when that is
 * over CLOCK_STEP_NS; a negative offset is a guest ahead of the host. Returns the offset measured. Its rounds are
 * exact only while nothing else keeps the guest busy: at boot it runs after SetupSandbox, before any task call.
 */
export async function syncGuestClock(client: TtrpcClient): Promise<bigint> {
  const delta = (await measureClock(client)).offsetNs;
  if (delta > CLOCK_STEP_NS || delta < -CLOCK_STEP_NS) {
    // ClientSendTime is informational here: the step is relative, so this message's own transit time does not matter.
    const sent = BigInt(Date.now()) * 1_000_000n;
    await client.service(SandboxService).syncClock({ ClientSendTime: sent, Delta: delta }, { timeoutMs: 5000 });
  }
  return delta;
}
