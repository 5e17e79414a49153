import { type ClockAddon, clockAddon } from "../native/ns/clock.ts";
import type { SyncClockPacket } from "../protos/gen/kuasar/sandbox_pb.ts";

/**
 * One round of the host's NTP-style clock sync, in nanoseconds (Node's own clock counts whole milliseconds). A
 * round with Delta 0 stamps the guest's arrival (ClientArriveTime) and departure (ServerSendTime), the fields
 * Kuasar's vmm-task fills; one with Delta set steps the clock by it with clock_settime, which may be negative (the
 * guest ahead of the host).
 */
export async function syncClock(p: SyncClockPacket, clock: ClockAddon = clockAddon()): Promise<SyncClockPacket> {
  const arrive = clock.clockRealtime();
  if (p.Delta !== 0n) {
    try {
      clock.clockStep(p.Delta);
    } catch (err) {
      throw new Error(`cannot step the guest clock by ${p.Delta} ns: ${(err as Error).message}`);
    }
  }
  return { ...p, ClientArriveTime: arrive, ServerSendTime: clock.clockRealtime() };
}
