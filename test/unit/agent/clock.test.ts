import assert from "node:assert/strict";
import { before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { syncClock } from "../../../runtime/agent/clock.ts";
import { type ClockAddon, clockAddon } from "../../../runtime/native/ns/clock.ts";
import { SyncClockPacketSchema } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import * as h from "./harness.ts";

before(() => h.addonsReady());

/** A guest clock that only records: stepping the machine's real clock is not a unit test's business. */
function fakeClock(start: bigint): ClockAddon & { steps: bigint[] } {
  let now = start;
  const steps: bigint[] = [];
  return {
    steps,
    clockRealtime: () => (now += 1_000n),
    clockStep: (d) => {
      steps.push(d);
      now += d;
      return now;
    },
  };
}

test("a round with Delta 0 stamps arrival and departure in nanoseconds and leaves the clock alone", async () => {
  const clock = fakeClock(1_700_000_000_123_456_789n);
  const r = await syncClock(create(SyncClockPacketSchema, { ClientSendTime: 5n }), clock);
  assert.deepEqual(
    [r.ClientSendTime, r.ClientArriveTime, r.ServerSendTime],
    [5n, 1_700_000_000_123_457_789n, 1_700_000_000_123_458_789n],
  );
  assert.deepEqual(clock.steps, []);
});

test("a round with Delta steps the clock by it exactly, forward or back, sub-second too", async () => {
  const clock = fakeClock(1_700_000_000_000_000_000n);
  for (const delta of [2_500_000_123n, -3_000_000_000n, 456_789n, -1n]) {
    await syncClock(create(SyncClockPacketSchema, { Delta: delta }), clock);
  }
  assert.deepEqual(clock.steps, [2_500_000_123n, -3_000_000_000n, 456_789n, -1n]);
});

test("a step the kernel refuses is an error naming the delta", async () => {
  const clock = fakeClock(0n);
  clock.clockStep = () => {
    throw Object.assign(new Error("clock_settime CLOCK_REALTIME: EPERM (Operation not permitted)"), { code: "EPERM" });
  };
  await assert.rejects(
    syncClock(create(SyncClockPacketSchema, { Delta: 7n }), clock),
    /cannot step the guest clock by 7 ns: clock_settime CLOCK_REALTIME: EPERM/,
  );
});

test("the addon reads CLOCK_REALTIME in nanoseconds", () => {
  const before = BigInt(Date.now()) * 1_000_000n;
  const ns = clockAddon().clockRealtime();
  const after = BigInt(Date.now() + 1) * 1_000_000n;
  assert.ok(before <= ns && ns <= after, `${before} <= ${ns} <= ${after}`);
  // Nanoseconds, not milliseconds scaled up: across readings some land off a whole millisecond.
  const readings = Array.from({ length: 20 }, () => clockAddon().clockRealtime() % 1_000_000n);
  assert.ok(
    readings.some((r) => r !== 0n),
    "every reading was a whole millisecond",
  );
});

test("the addon refuses a step that is not a 64-bit bigint or leaves time_t before touching the clock", () => {
  const addon = clockAddon();
  assert.throws(
    () => addon.clockStep(1n << 70n),
    (e: NodeJS.ErrnoException) => e.code === "EINVAL" && /at most 64 bits/.test(e.message),
  );
  assert.throws(
    () => addon.clockStep(5 as unknown as bigint),
    (e: NodeJS.ErrnoException) => e.code === "EINVAL",
  );
  assert.throws(
    () => addon.clockStep(-(1n << 62n)),
    (e: NodeJS.ErrnoException) => e.code === "ERANGE" && /would leave 1970..2262/.test(e.message),
  );
});
