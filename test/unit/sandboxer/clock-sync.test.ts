import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { SandboxService, type SyncClockPacket } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { hostClock, sampleClock, syncGuestClock } from "../../../runtime/sandboxer/agent.ts";
import { type ServiceHandlers, TtrpcClient, TtrpcServer } from "../../../runtime/ttrpc/index.ts";

// A guest whose clock runs `skew` ns behind the host's (negative: ahead), in this very process, so how far an
// estimate may be off is known exactly: half the round trip it measured.
let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "clock-sync-"));
});
after(() => rm(dir, { recursive: true, force: true }));

interface FakeGuest {
  skew: bigint;
  deltas: bigint[];
  /** Replaces the reply (a hostile guest); the honest one is passed in. */
  forge?: (honest: SyncClockPacket) => SyncClockPacket;
  /** Held before the arrival stamp, per round: a slow path to the guest that the best-of-N filter must see past. */
  delayMs?: (round: number) => number;
}

async function guest(g: FakeGuest, now = hostClock()): Promise<{ client: TtrpcClient; close: () => Promise<void> }> {
  let round = 0;
  const handlers = {
    syncClock: async (p: SyncClockPacket) => {
      const wait = g.delayMs?.(round++) ?? 0;
      if (wait) await new Promise((r) => setTimeout(r, wait));
      const arrive = now() - g.skew;
      if (p.Delta !== 0n) {
        g.deltas.push(p.Delta);
        g.skew -= p.Delta;
      }
      const honest = { ...p, ClientArriveTime: arrive, ServerSendTime: now() - g.skew };
      return g.forge ? g.forge(honest) : honest;
    },
  } as unknown as ServiceHandlers<typeof SandboxService>;
  const server = new TtrpcServer().register(SandboxService, handlers);
  const sock = path.join(dir, `g${Math.random().toString(36).slice(2)}.sock`);
  const l = net.createServer();
  server.serve(l);
  await new Promise<void>((r) => l.listen(sock, r));
  const s = net.connect(sock);
  await new Promise((r, j) => s.once("connect", r).once("error", j));
  const client = new TtrpcClient(s);
  return {
    client,
    close: async () => {
      client.close();
      await server.close();
    },
  };
}

const abs = (n: bigint) => (n < 0n ? -n : n);

test("the host clock reads the wall clock in nanoseconds, not whole milliseconds", () => {
  const before = BigInt(Date.now()) * 1_000_000n;
  const now = hostClock();
  const t = now();
  const after = BigInt(Date.now() + 1) * 1_000_000n;
  assert.ok(before <= t && t <= after, `${before} <= ${t} <= ${after}`);
  const readings = Array.from({ length: 20 }, () => now() % 1_000_000n);
  assert.ok(
    readings.some((r) => r !== 0n),
    "every reading was a whole millisecond",
  );
});

test("each round's offset is within half its round trip of the true skew", async () => {
  // One clock for both ends: what is left is the estimate's own error.
  const now = hostClock();
  const g = { skew: 1_234_567_891n, deltas: [] };
  const { client, close } = await guest(g, now);
  try {
    for (let i = 0; i < 5; i++) {
      const s = await sampleClock(client, now);
      assert.ok(s.rttNs >= 0n, `rtt ${s.rttNs}`);
      assert.ok(abs(s.offsetNs - g.skew) <= s.rttNs / 2n + 1n, `offset ${s.offsetNs}, rtt ${s.rttNs}`);
    }
  } finally {
    await close();
  }
});

for (const [what, skew] of [
  ["behind: stepped forward", 2_500_000_123n],
  ["ahead: stepped back (a negative Delta)", -3_000_000_007n],
] as const) {
  test(`a guest ${what} to within the measurement`, async () => {
    const g = { skew, deltas: [] as bigint[] };
    const { client, close } = await guest(g);
    try {
      const t0 = process.hrtime.bigint();
      const delta = await syncGuestClock(client);
      // Every round fits in the whole call, so half of it bounds the error of the best one.
      const bound = (process.hrtime.bigint() - t0) / 2n;
      assert.deepEqual(g.deltas, [delta], "the measured offset is what the guest is told to step by");
      assert.ok(abs(delta - skew) <= bound, `delta ${delta} for skew ${skew} (bound ${bound})`);
      assert.ok(abs(g.skew) <= bound, `left ${g.skew} ns off`);
    } finally {
      await close();
    }
  });
}

test("the round with the shortest trip is the one used: a slow path to the guest skews the others", async () => {
  // Rounds 0, 1, 3 and 4 wait 400 ms before the guest stamps arrival: their offsets read 200 ms low.
  const g = { skew: 5_000_000_000n, deltas: [] as bigint[], delayMs: (round: number) => (round === 2 ? 0 : 400) };
  const { client, close } = await guest(g);
  try {
    const delta = await syncGuestClock(client);
    assert.ok(abs(delta - 5_000_000_000n) < 100_000_000n, `delta ${delta}: a delayed round was used`);
  } finally {
    await close();
  }
});

test("a round precise enough for the step threshold ends the measurement early", async () => {
  // Rounds 0 and 1 are slow (30 ms before the arrival stamp); from round 2 on the trip is well under 2 ms.
  let rounds = 0;
  const g = {
    skew: 0n,
    deltas: [] as bigint[],
    delayMs: (round: number) => {
      rounds = round + 1;
      return round < 2 ? 30 : 0;
    },
  };
  const { client, close } = await guest(g);
  try {
    await syncGuestClock(client);
    assert.ok(rounds >= 3 && rounds < 5, `${rounds} rounds: not stopped at the first precise one`);
  } finally {
    await close();
  }
});

test("attack: a reply whose times run backwards or outlast the round trip is refused and the clock left alone", async () => {
  for (const forge of [
    (p: SyncClockPacket) => ({ ...p, ServerSendTime: p.ClientArriveTime - 1n }),
    (p: SyncClockPacket) => ({ ...p, ServerSendTime: p.ClientArriveTime + 3_600_000_000_000n }),
  ]) {
    const g = { skew: 10_000_000_000n, deltas: [] as bigint[], forge };
    const { client, close } = await guest(g);
    try {
      await assert.rejects(syncGuestClock(client), /the guest's SyncClock reply is inconsistent .* clock left alone/);
      assert.deepEqual(g.deltas, []);
    } finally {
      await close();
    }
  }
});
