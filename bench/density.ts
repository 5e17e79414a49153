// Density: the daemon's memory (PSS from /proc/<pid>/smaps_rollup) with 0, 1, 5 and 10 running sandboxes, booted
// in small concurrent batches (TCG boots are slow and the machine has 2 cores); the host cost of each VM (QEMU +
// vhost-device-vsock PSS); vmm-task's memory inside the guest, idle and with 10 containers, read from its
// /proc/<pid>/status through the agent's ExecVMProcess; and the time from the kernel's start to the first Check
// the agent answers, both from the host-watched serial console and from the guest's own uptime.
// Run: node --import tsx bench/density.ts [--sandboxes 10] [--batch 2] [--containers 10]
// (writes bench/results/density.json and bench/results/density.svg)

import { writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { unaryClient } from "../runtime/grpc/service.ts";
import { Task } from "../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Controller } from "../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { loadConfig } from "../runtime/sandboxer/config/load.ts";
import { TtrpcClient } from "../runtime/ttrpc/index.ts";
import { busyboxBundle, processesMatching, requireArtifacts, writeConfig } from "../testkit/daemon.ts";
import { cleanup, runBenchmark, scratchDir } from "./lib/cleanup.ts";
import {
  goal,
  mdTable,
  mib,
  ms,
  percentile,
  publish,
  type RunInfo,
  resultsDir,
  runLine,
  startRun,
  verdict,
} from "./lib/report.ts";
import { lineChart } from "./lib/svg.ts";
import {
  type AgentMemory,
  agentMemory,
  ConsoleWatch,
  daemonSteps,
  type ProcMemory,
  procMemory,
  startBundledDaemon,
} from "./lib/vm.ts";

const GOAL_BASELINE_MIB = 60;
const GOAL_PER_SANDBOX_MIB = 0.5;
const GOAL_AGENT_IDLE_MIB = 40;
const REPORTED_COUNTS = [0, 1, 5, 10];

interface Point {
  sandboxes: number;
  /** Median of the readings of each field. */
  daemon: ProcMemory;
}

interface SandboxFacts {
  id: string;
  /** Create+Start as the client saw it, ms. */
  startMs: number;
  /** Host clock: kernel's first console line -> the daemon's first Check answered. */
  kernelToCheckMs: number;
  /** Guest clock: its uptime when the first Check was answered. */
  uptimeAtCheckMs: number;
  /** QEMU + vhost-device-vsock PSS, bytes. */
  vmmPssBytes: number;
  agentIdle: AgentMemory;
}

interface Result {
  run: RunInfo;
  setup: { vcpus: number; memoryMiB: number; batch: number; daemon: string };
  points: Point[];
  baselineBytes: number;
  /** Least-squares slope of daemon PSS over the points with 1 or more sandboxes (bytes per sandbox). */
  perSandboxBytes: number;
  /** The same slope of USS (private memory: unaffected by other processes sharing node's pages). */
  perSandboxUssBytes: number;
  /** PSS at 1 - PSS at 0: what the first sandbox adds (code paths loaded once). */
  firstSandboxBytes: number;
  sandboxes: SandboxFacts[];
  agentIdleRssP50Bytes: number;
  agentWithContainers: AgentMemory & { containers: number };
  kernelToCheckP50Ms: number;
  uptimeAtCheckP50Ms: number;
  vmmPssP50Bytes: number;
  goals: { baseline: ReturnType<typeof goal>; perSandbox: ReturnType<typeof goal>; agentIdle: ReturnType<typeof goal> };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** MiB with two decimals: per-sandbox figures are compared with 0.5. */
const mib2 = (bytes: number) => Math.round((bytes / 1048576) * 100) / 100;

const SETTLE_MS = 10_000;
const READINGS = 10;

/**
 * The daemon's memory once idle: V8's memory reducer runs a full GC some seconds after allocation stops, so the
 * readings start SETTLE_MS after a batch is up and the median of READINGS (0.5 s apart) is kept.
 */
async function settledMemory(pid: number): Promise<ProcMemory> {
  await sleep(SETTLE_MS);
  const readings: ProcMemory[] = [];
  for (let i = 0; i < READINGS; i++) {
    readings.push(procMemory(pid));
    await sleep(500);
  }
  const median = (k: keyof ProcMemory) =>
    percentile(
      readings.map((r) => r[k]),
      0.5,
    );
  return { pss: median("pss"), rss: median("rss"), uss: median("uss") };
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? Number.NaN : sxy / sxx;
}

/** PSS of the VM's own processes: everything whose command line names the sandbox directory. */
function vmmPss(sandboxDir: string): number {
  return processesMatching(sandboxDir).reduce((sum, pid) => sum + procMemory(pid).pss, 0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sandboxes: { type: "string", default: "10" },
      batch: { type: "string", default: "2" },
      containers: { type: "string", default: "10" },
    },
  });
  const total = Number(values.sandboxes);
  const batch = Number(values.batch);
  const containers = Number(values.containers);
  for (const [k, v] of Object.entries({ sandboxes: total, batch, containers })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
  }
  requireArtifacts(["vmlinux.bin", "kuasar.img", "vmm-sandboxer"]);
  const run = startRun();
  const dir = await scratchDir("bench-density-");
  const configFile = path.join(dir, "config.toml");
  await writeConfig(configFile);
  const { config } = await loadConfig(configFile);
  const daemon = await startBundledDaemon(dir, configFile);
  const pid = daemon.proc.pid!;
  const { client, close } = unaryClient(Controller, `unix://${daemon.sock}`);
  const watch = new ConsoleWatch(daemon.stateDir).start();
  try {
    const points: Point[] = [{ sandboxes: 0, daemon: await settledMemory(pid) }];
    console.log(`  0 sandboxes: daemon PSS ${mib(points[0]!.daemon.pss)} MiB, USS ${mib(points[0]!.daemon.uss)} MiB`);
    const started: Array<{ id: string; startMs: number }> = [];
    // the first sandbox alone (what one costs), then batches up to the total
    while (started.length < total) {
      const n = started.length === 0 ? 1 : Math.min(batch, total - started.length);
      const ids = Array.from({ length: n }, (_, i) => `pod-${started.length + i}`);
      const t0 = Date.now();
      await Promise.all(
        ids.map(async (id) => {
          await client.create({ sandboxId: id });
          await client.start({ sandboxId: id }, { deadlineMs: 240_000 });
          started.push({ id, startMs: Date.now() - t0 });
        }),
      );
      const upS = ((Date.now() - t0) / 1000).toFixed(1);
      const mem = await settledMemory(pid);
      points.push({ sandboxes: started.length, daemon: mem });
      console.log(
        `  ${started.length} sandboxes: daemon PSS ${mib(mem.pss)} MiB, USS ${mib(mem.uss)} MiB (batch of ${n} up in ${upS} s)`,
      );
    }

    const sandboxes: SandboxFacts[] = [];
    started.sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true }));
    for (const s of started) {
      const sandboxDir = path.join(daemon.stateDir, s.id);
      const steps = daemonSteps(daemon.log(), s.id);
      const kernelAt = watch.times(s.id).kernel;
      if (!steps.agent || !kernelAt) throw new Error(`${s.id}: no Check time in the daemon log or no kernel line`);
      const mem = await agentMemory(path.join(sandboxDir, "task.vsock"));
      sandboxes.push({
        ...s,
        kernelToCheckMs: steps.agent - kernelAt,
        uptimeAtCheckMs: ms(mem.uptimeS * 1000 - (mem.hostAt - steps.agent)),
        vmmPssBytes: vmmPss(sandboxDir),
        agentIdle: mem,
      });
    }
    console.log(`  vmm-task idle RSS: ${sandboxes.map((s) => mib(s.agentIdle.rss)).join(", ")} MiB`);

    // containers in the first sandbox, through the daemon's task API as containerd would create them
    const first = started[0]!.id;
    const conn = net.connect(path.join(daemon.stateDir, first, "task.sock"));
    await new Promise((r) => conn.once("connect", r));
    const tasks = new TtrpcClient(conn);
    const task = tasks.service(Task);
    for (let i = 0; i < containers; i++) {
      const id = `sleeper-${i}`;
      await task.create({ id, bundle: await busyboxBundle(dir, ["sleep", "3600"]) }, { timeoutMs: 120_000 });
      await task.start({ id }, { timeoutMs: 60_000 });
    }
    await sleep(2000);
    const loaded = await agentMemory(path.join(daemon.stateDir, first, "task.vsock"));
    console.log(`  vmm-task RSS with ${containers} containers: ${mib(loaded.rss)} MiB`);
    tasks.close();
    await Promise.all(started.map((s) => client.shutdown({ sandboxId: s.id }, { deadlineMs: 120_000 })));

    const at = (n: number) => points.find((p) => p.sandboxes === n)?.daemon.pss ?? Number.NaN;
    const running = points.filter((p) => p.sandboxes >= 1);
    const perSandboxBytes = slope(running.map((p) => [p.sandboxes, p.daemon.pss]));
    const perSandboxUssBytes = slope(running.map((p) => [p.sandboxes, p.daemon.uss]));
    const agentIdleRssP50Bytes = percentile(
      sandboxes.map((s) => s.agentIdle.rss),
      0.5,
    );
    const result: Result = {
      run: run.finish(),
      setup: {
        vcpus: config.hypervisor.vcpus,
        memoryMiB: config.hypervisor.memory_in_mb,
        batch,
        daemon: "bin/vmm-sandboxer",
      },
      points,
      baselineBytes: at(0),
      perSandboxBytes: Math.round(perSandboxBytes),
      perSandboxUssBytes: Math.round(perSandboxUssBytes),
      firstSandboxBytes: at(1) - at(0),
      sandboxes,
      agentIdleRssP50Bytes,
      agentWithContainers: { ...loaded, containers },
      kernelToCheckP50Ms: ms(
        percentile(
          sandboxes.map((s) => s.kernelToCheckMs),
          0.5,
        ),
      ),
      uptimeAtCheckP50Ms: ms(
        percentile(
          sandboxes.map((s) => s.uptimeAtCheckMs),
          0.5,
        ),
      ),
      vmmPssP50Bytes: percentile(
        sandboxes.map((s) => s.vmmPssBytes),
        0.5,
      ),
      goals: {
        baseline: goal(mib(at(0)), GOAL_BASELINE_MIB, "max"),
        perSandbox: goal(mib2(perSandboxBytes), GOAL_PER_SANDBOX_MIB, "max"),
        agentIdle: goal(mib(agentIdleRssP50Bytes), GOAL_AGENT_IDLE_MIB, "max"),
      },
    };
    writeFileSync(path.join(resultsDir, "density.svg"), plot(result));
    const out = publish("density", result, markdown(result));
    printTables(result);
    console.log(`\nwrote ${out}, bench/results/density.svg and BENCHMARKS.md`);
  } finally {
    close();
    await cleanup();
  }
}

function plot(r: Result): string {
  const n = r.points[r.points.length - 1]!.sandboxes;
  return lineChart({
    title: "vmm-sandboxer memory by running sandboxes (QEMU TCG, 2 cores)",
    xLabel: "running sandboxes",
    yLabel: "daemon memory (MiB)",
    series: [
      { name: "PSS", color: "#1f77b4", points: r.points.map((p) => [p.sandboxes, mib(p.daemon.pss)]) },
      { name: "USS (private)", color: "#2ca02c", points: r.points.map((p) => [p.sandboxes, mib(p.daemon.uss)]) },
      {
        name: `goal: ${GOAL_BASELINE_MIB} MiB + ${GOAL_PER_SANDBOX_MIB} MiB per sandbox`,
        color: "#d62728",
        dashed: true,
        points: [
          [0, GOAL_BASELINE_MIB],
          [n, GOAL_BASELINE_MIB + GOAL_PER_SANDBOX_MIB * n],
        ],
      },
    ],
  });
}

function goalRows(r: Result): Array<[string, string]> {
  return [
    ["daemon baseline PSS (0 sandboxes)", verdict(r.goals.baseline, " MiB")],
    ["daemon PSS per sandbox (least-squares slope, 1..N sandboxes)", verdict(r.goals.perSandbox, " MiB")],
    ["vmm-task RSS in the guest, idle (p50)", verdict(r.goals.agentIdle, " MiB")],
  ];
}

function printTables(r: Result): void {
  console.log("\ndaemon memory by running sandboxes");
  console.table(
    r.points.map((p) => ({
      sandboxes: p.sandboxes,
      "PSS MiB": mib(p.daemon.pss),
      "USS MiB": mib(p.daemon.uss),
      "RSS MiB": mib(p.daemon.rss),
    })),
  );
  console.table(
    r.sandboxes.map((s) => ({
      sandbox: s.id,
      "start s": s.startMs / 1000,
      "kernel->Check ms": s.kernelToCheckMs,
      "uptime at Check ms": s.uptimeAtCheckMs,
      "QEMU+helper PSS MiB": mib(s.vmmPssBytes),
      "vmm-task RSS MiB": mib(s.agentIdle.rss),
    })),
  );
  console.log(
    `${r.run.cpus} CPUs, load average ${r.run.loadavgStart.join(" ")} -> ${r.run.loadavgEnd.join(" ")}; ` +
      `USS slope ${mib2(r.perSandboxUssBytes)} MiB per sandbox; first sandbox adds ${mib(r.firstSandboxBytes)} MiB; QEMU+helper PSS p50 ${mib(r.vmmPssP50Bytes)} MiB per VM; ` +
      `vmm-task with ${r.agentWithContainers.containers} containers: RSS ${mib(r.agentWithContainers.rss)} MiB; ` +
      `kernel start -> first Check p50 ${r.kernelToCheckP50Ms} ms (guest uptime ${r.uptimeAtCheckP50Ms} ms)`,
  );
  for (const [what, v] of goalRows(r)) console.log(`${what}: ${v}`);
}

function markdown(r: Result): string {
  const rows = REPORTED_COUNTS.filter((n) => r.points.some((p) => p.sandboxes === n)).map((n) => {
    const p = r.points.find((q) => q.sandboxes === n)!;
    return [
      n,
      mib(p.daemon.pss),
      n === 0 ? "" : mib2((p.daemon.pss - r.baselineBytes) / n),
      mib(p.daemon.uss),
      mib(p.daemon.rss),
    ];
  });
  const a = r.agentWithContainers;
  return [
    "## Density: daemon memory per sandbox, vmm-task in the guest",
    "",
    runLine(r.run),
    `Daemon: \`${r.setup.daemon}\`; guests of ${r.setup.vcpus} vCPU and ${r.setup.memoryMiB} MiB, started through the ` +
      `Controller (the first alone, then ${r.setup.batch} at a time). Memory is the median of ${READINGS} readings of ` +
      `\`/proc/<pid>/smaps_rollup\` 0.5 s apart, starting ${SETTLE_MS / 1000} s after each batch is up (V8 collects ` +
      "once the daemon idles). PSS shares node's pages with every other node process on the machine, so it drifts " +
      "with what others run; USS (private pages) does not. Goals in MB are read as MiB.",
    "",
    mdTable(["goal", "measured vs goal"], goalRows(r)),
    "",
    mdTable(["running sandboxes", "daemon PSS MiB", "PSS above baseline per sandbox MiB", "USS MiB", "RSS MiB"], rows),
    "",
    "![daemon memory by running sandboxes](bench/results/density.svg)",
    "",
    `Per sandbox, the least-squares slope over ${r.points.filter((p) => p.sandboxes > 0).length} points from 1 to ` +
      `${r.points[r.points.length - 1]!.sandboxes} sandboxes: PSS ${mib2(r.perSandboxBytes)} MiB, USS ` +
      `${mib2(r.perSandboxUssBytes)} MiB; the first ` +
      `sandbox adds ${mib(r.firstSandboxBytes)} MiB (code paths loaded once). Each VM costs the host ` +
      `${mib(r.vmmPssP50Bytes)} MiB PSS (QEMU + vhost-device-vsock, p50), outside the daemon.`,
    "",
    mdTable(
      ["vmm-task in the guest", "RSS MiB", "peak RSS (VmHWM) MiB", "PSS MiB"],
      [
        [
          `idle (p50 over ${r.sandboxes.length} guests)`,
          mib(r.agentIdleRssP50Bytes),
          mib(
            percentile(
              r.sandboxes.map((s) => s.agentIdle.hwm),
              0.5,
            ),
          ),
          mib(
            percentile(
              r.sandboxes.map((s) => s.agentIdle.pss),
              0.5,
            ),
          ),
        ],
        [`with ${a.containers} running containers`, mib(a.rss), mib(a.hwm), mib(a.pss)],
      ],
    ),
    "",
    `Kernel start to the first Check answered, p50 over ${r.sandboxes.length} guests: ${r.kernelToCheckP50Ms} ms ` +
      `from the host (the kernel's first console line to the daemon's \`agent answered\` log line), ` +
      `${r.uptimeAtCheckP50Ms} ms by the guest's own clock (its /proc/uptime, carried back to the moment of the ` +
      "Check). These guests booted concurrently with others, so they are slower than a lone boot " +
      "(see sandbox-start).",
    "",
    `What was measured in the guest: \`${a.cmdline}\` (the parent of the shell ExecVMProcess runs), its ` +
      "`/proc/<pid>/status` and `smaps_rollup`. Containers: busybox `sleep 3600`, created and started through the " +
      "daemon's task API one after another.",
  ].join("\n");
}

await runBenchmark("density", main);
