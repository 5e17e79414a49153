import { create, toBinary } from "@bufbuild/protobuf";
import type { Any } from "@bufbuild/protobuf/wkt";
import { MemoryStatSchema, MetricsSchema, PidsStatSchema } from "../protos/gen/containerd/cgroups/v2/metrics_pb.ts";
import type { CgroupV2Stats, Limit } from "./stats.ts";

/** "max" in a cgroup file: containerd reports it as the largest uint64. */
const UNLIMITED = 2n ** 64n - 1n;
const limit = (l: Limit | undefined): bigint => (l === null || l === undefined ? UNLIMITED : l);

/** memory.stat key -> MemoryStat field (same words, camel case). */
const camel = (k: string) => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const MEMORY_FIELDS = new Set(MemoryStatSchema.fields.map((f) => f.localName));

/**
 * A cgroup's v2 numbers as io.containerd.cgroups.v2.Metrics, the Any containerd turns into container and pod
 * stats (Task.Stats in the guest, Controller.Metrics on the host).
 */
export function metricsAny(stats: CgroupV2Stats): Any {
  const m = create(MetricsSchema);
  if (stats.pids) m.pids = create(PidsStatSchema, { current: stats.pids.current, limit: limit(stats.pids.max) });
  if (stats.cpu) {
    const c = stats.cpu;
    m.cpu = {
      $typeName: "io.containerd.cgroups.v2.CPUStat",
      usageUsec: c.usage_usec ?? 0n,
      userUsec: c.user_usec ?? 0n,
      systemUsec: c.system_usec ?? 0n,
      nrPeriods: c.nr_periods ?? 0n,
      nrThrottled: c.nr_throttled ?? 0n,
      throttledUsec: c.throttled_usec ?? 0n,
    };
  }
  if (stats.memory) {
    const mem = stats.memory;
    const memory = create(MemoryStatSchema, {
      usage: mem.current,
      usageLimit: limit(mem.max),
      swapUsage: mem.swapCurrent ?? 0n,
      swapLimit: limit(mem.swapMax),
    });
    const fields = memory as unknown as Record<string, bigint>;
    for (const [k, v] of Object.entries(mem.stat)) {
      const f = camel(k);
      if (MEMORY_FIELDS.has(f)) fields[f] = v;
    }
    m.memory = memory;
    m.memoryEvents = {
      $typeName: "io.containerd.cgroups.v2.MemoryEvents",
      low: mem.events.low ?? 0n,
      high: mem.events.high ?? 0n,
      max: mem.events.max ?? 0n,
      oom: mem.events.oom ?? 0n,
      oomKill: mem.events.oom_kill ?? 0n,
    };
  }
  if (stats.io) {
    m.io = {
      $typeName: "io.containerd.cgroups.v2.IOStat",
      usage: stats.io.map((e) => ({
        $typeName: "io.containerd.cgroups.v2.IOEntry",
        major: BigInt(e.major),
        minor: BigInt(e.minor),
        rbytes: e.rbytes,
        wbytes: e.wbytes,
        rios: e.rios,
        wios: e.wios,
      })),
    };
  }
  return { $typeName: "google.protobuf.Any", typeUrl: MetricsSchema.typeName, value: toBinary(MetricsSchema, m) };
}
