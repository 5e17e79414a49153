import type { Duplex } from "node:stream";
import { AGENT_PORT } from "../contract/ports.ts";
import { SandboxService } from "../protos/gen/kuasar/sandbox_pb.ts";
import { TtrpcClient } from "../ttrpc/index.ts";

/**
 * Connects to the guest agent, retrying until it answers Check or the deadline passes. A VM that exits, or
 * a guest that never listens, is reported with the last error so the caller can add the console tail.
 */
export async function connectAgent(
  dial: () => Promise<Duplex>,
  opts: { deadlineMs: number; retryMs?: number; alive?: () => boolean },
): Promise<TtrpcClient> {
  const until = Date.now() + opts.deadlineMs;
  let last = "no attempt made";
  while (Date.now() < until) {
    if (opts.alive && !opts.alive()) throw new Error(`the VM exited before the agent answered (last error: ${last})`);
    let client: TtrpcClient | undefined;
    try {
      client = new TtrpcClient(await dial());
      await client.service(SandboxService).check({ service: "" }, { timeoutMs: Math.min(5000, until - Date.now()) });
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

/** Offset (ns) of the guest clock from the host's, NTP-style, from one round trip. */
export async function measureClockDelta(client: TtrpcClient): Promise<bigint> {
  const now = () => BigInt(Date.now()) * 1_000_000n;
  const sent = now();
  const r = await client.service(SandboxService).syncClock({ ClientSendTime: sent }, { timeoutMs: 5000 });
  const back = now();
  // Positive: the guest is behind and must step forward.
  return (sent - r.ServerArriveTime + (back - r.ServerSendTime)) / 2n;
}

/** Steps the guest clock when it is off by more than 10 ms (a negative offset is a guest ahead of the host). */
export async function syncGuestClock(client: TtrpcClient): Promise<bigint> {
  const delta = await measureClockDelta(client);
  if (delta > 10_000_000n || delta < -10_000_000n) {
    await client.service(SandboxService).syncClock({ ClientSendTime: BigInt(Date.now()) * 1_000_000n, Delta: delta });
  }
  return delta;
}
