import { execa } from "execa";
import type { SyncClockPacket } from "../protos/gen/kuasar/sandbox_pb.ts";

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

/**
 * One round of the host's NTP-style clock sync. The first call (Delta 0) timestamps arrival and departure;
 * a follow-up carries the host's computed offset, which may be negative (the guest ahead of the host).
 */
export async function syncClock(p: SyncClockPacket): Promise<SyncClockPacket> {
  const arrive = nowNs();
  if (p.Delta !== 0n) await stepClock(p.Delta);
  return { ...p, ServerArriveTime: arrive, ServerSendTime: nowNs() };
}

/**
 * Steps the clock by deltaNs with busybox date, which sets whole seconds: offsets under a second are left
 * alone rather than traded for a different sub-second error.
 */
async function stepClock(deltaNs: bigint): Promise<void> {
  if (deltaNs > -1_000_000_000n && deltaNs < 1_000_000_000n) return;
  const target = nowNs() + deltaNs;
  const seconds = target / 1_000_000_000n;
  const r = await execa("date", ["-u", "-s", `@${seconds}`], { reject: false, stdin: "ignore" });
  if (r.failed) throw new Error(`cannot set the guest clock: ${r.stderr.trim() || r.shortMessage}`);
}
