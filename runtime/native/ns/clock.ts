import { loadAddon } from "../load.ts";

/** The clock calls of runtime/native/ns/ns.c. Errors carry the errno name as code. */
export interface ClockAddon {
  /** CLOCK_REALTIME in nanoseconds since the epoch. */
  clockRealtime(): bigint;
  /** Moves CLOCK_REALTIME by deltaNs (negative: back) with clock_settime; returns the new time in nanoseconds. */
  clockStep(deltaNs: bigint): bigint;
}

export function clockAddon(): ClockAddon {
  return loadAddon<ClockAddon>("ns", "KUASAR_NS_ADDON");
}
