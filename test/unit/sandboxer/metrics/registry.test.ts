import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { DaemonMetrics } from "../../../../runtime/sandboxer/metrics/registry.ts";
import type { SandboxRecord } from "../../../../runtime/sandboxer/sandbox/record.ts";

const rec = (id: string, state: SandboxRecord["state"], pid?: number): SandboxRecord => ({
  id,
  state,
  createdAt: new Date().toISOString(),
  netnsPath: "",
  annotations: {},
  labels: {},
  nextStorage: 0,
  ...(pid ? { pid } : {}),
});

async function deadPid(): Promise<number> {
  const child = spawn("true");
  await new Promise((r) => child.once("exit", r));
  await new Promise((r) => setTimeout(r, 50));
  return child.pid!;
}

/** The value of one series in the text exposition, or undefined when it is absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test("the exposition: sandboxes by state, per-VMM CPU and memory, start phases, stops, recoveries, agent errors", async () => {
  const gone = await deadPid();
  const sandboxes = [
    rec("pod-a", "running", process.pid),
    rec("pod-b", "running", gone),
    rec("pod-c", "created"),
    rec("pod-d", "stopped"),
  ];
  const m = new DaemonMetrics({ defaults: false });
  m.watch({ list: () => sandboxes });
  m.startPhase("spawn", 120);
  m.startPhase("total", 1500);
  m.startPhase("total", 2500);
  m.stopped(300);
  m.recovery("recovered");
  m.recovery("lost");
  m.agentCallFailed("containerd.task.v3.Task/Create", "DeadlineExceeded");
  const text = await m.registry.metrics();

  assert.equal(value(text, 'kuasar_vmm_sandboxes{state="running"}'), 2);
  assert.equal(value(text, 'kuasar_vmm_sandboxes{state="created"}'), 1);
  assert.equal(value(text, 'kuasar_vmm_sandboxes{state="stopped"}'), 1);

  // This process stands in for pod-a's VMM; pod-b's VMM exited after the list was taken: no series, no error.
  assert.ok(value(text, 'kuasar_vmm_vmm_cpu_seconds_total{sandbox="pod-a"}')! > 0);
  assert.ok(value(text, 'kuasar_vmm_vmm_memory_bytes{sandbox="pod-a",kind="rss"}')! > 1 << 20);
  assert.ok(value(text, 'kuasar_vmm_vmm_memory_bytes{sandbox="pod-a",kind="pss"}')! > 0);
  assert.doesNotMatch(text, /sandbox="pod-b"/);
  assert.doesNotMatch(text, /sandbox="pod-c"/);
  assert.match(text, /# TYPE kuasar_vmm_vmm_cpu_seconds_total counter/);

  assert.equal(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_count{phase="total"}'), 2);
  assert.equal(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_sum{phase="total"}'), 4);
  assert.equal(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_bucket{le="2.5",phase="total"}'), 2);
  assert.equal(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_bucket{le="1",phase="total"}'), 0);
  assert.equal(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_count{phase="spawn"}'), 1);
  // Phases not seen yet are present at zero, so a dashboard shows them from the start.
  assert.equal(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_count{phase="boot"}'), 0);
  assert.equal(value(text, "kuasar_vmm_sandbox_stop_duration_seconds_sum"), 0.3);

  assert.equal(value(text, 'kuasar_vmm_recoveries_total{outcome="recovered"}'), 1);
  assert.equal(value(text, 'kuasar_vmm_recoveries_total{outcome="lost"}'), 1);
  assert.equal(value(text, 'kuasar_vmm_recoveries_total{outcome="killed"}'), 0);
  assert.equal(
    value(text, 'kuasar_vmm_agent_call_errors_total{method="containerd.task.v3.Task/Create",code="DeadlineExceeded"}'),
    1,
  );
  assert.doesNotMatch(text, /^process_cpu/m, "default metrics were turned off here");
});

test("per-sandbox series follow the sandboxes: a stopped one drops out at the next scrape", async () => {
  const sandboxes = [rec("pod-a", "running", process.pid)];
  const m = new DaemonMetrics({ defaults: false });
  m.watch({ list: () => sandboxes });
  assert.match(await m.registry.metrics(), /kuasar_vmm_vmm_memory_bytes\{sandbox="pod-a",kind="rss"\}/);
  sandboxes[0]!.state = "stopped";
  const text = await m.registry.metrics();
  assert.doesNotMatch(text, /sandbox="pod-a"/);
  assert.equal(value(text, 'kuasar_vmm_sandboxes{state="running"}'), 0);
});

test("the daemon's own process metrics come from prom-client's defaults", async () => {
  const m = new DaemonMetrics();
  const text = await m.registry.metrics();
  assert.match(text, /^process_cpu_user_seconds_total \d/m);
  assert.match(text, /^process_resident_memory_bytes \d/m);
  assert.match(text, /^nodejs_eventloop_lag_seconds \d/m);
  // Nothing to read before the manager is attached: every state at zero.
  assert.equal(value(text, 'kuasar_vmm_sandboxes{state="running"}'), 0);
});
