import assert from "node:assert/strict";
import { test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { metricsAny } from "../../../runtime/cgroups/metrics.ts";
import { MetricsSchema } from "../../../runtime/protos/gen/containerd/cgroups/v2/metrics_pb.ts";

test("cgroup v2 numbers become io.containerd.cgroups.v2.Metrics; 'max' is the largest uint64", () => {
  const any = metricsAny({
    version: 2,
    pids: { current: 3n, max: null },
    cpu: { usage_usec: 1500n, user_usec: 1000n, system_usec: 500n, nr_periods: 0n },
    memory: {
      current: 4096n,
      max: 16777216n,
      stat: { anon: 1024n, file: 2048n, pgfault: 7n, not_a_field: 9n },
      events: { oom: 1n, oom_kill: 1n },
    },
    io: [{ major: 254, minor: 0, rbytes: 10n, wbytes: 20n, rios: 1n, wios: 2n }],
  });
  assert.equal(any.typeUrl, "io.containerd.cgroups.v2.Metrics");
  const m = fromBinary(MetricsSchema, any.value);
  assert.deepEqual([m.pids?.current, m.pids?.limit], [3n, 2n ** 64n - 1n]);
  assert.deepEqual([m.cpu?.usageUsec, m.cpu?.userUsec, m.cpu?.systemUsec], [1500n, 1000n, 500n]);
  assert.deepEqual(
    [m.memory?.usage, m.memory?.usageLimit, m.memory?.anon, m.memory?.file, m.memory?.pgfault],
    [4096n, 16777216n, 1024n, 2048n, 7n],
  );
  assert.equal(m.memoryEvents?.oomKill, 1n);
  assert.deepEqual(
    m.io?.usage.map((e) => [e.major, e.rbytes, e.wios]),
    [[254n, 10n, 2n]],
  );
});
