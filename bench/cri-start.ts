// Pod + container start through containerd's CRI, as kubelet drives it: RunPodSandbox, CreateContainer,
// StartContainer against a private containerd 2.1 with vmm-sandboxer (testkit/containerd.ts), serially and 4 pods
// in parallel. Phases come from the daemon's log timestamps and the guest's serial console watched from the host.
// Run: node --import tsx bench/cri-start.ts [--runs N] [--parallel 4]   (writes bench/results/cri-start.json)

import { mkdir } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { type Env, IMAGE, RUNTIME_HANDLER, startEnv } from "../testkit/containerd.ts";
import { cleanup, onCleanup, runBenchmark } from "./lib/cleanup.ts";
import {
  type Goal,
  goal,
  mdTable,
  ms,
  percentile,
  phasesSection,
  publish,
  type RunInfo,
  runLine,
  startRun,
  verdict,
} from "./lib/report.ts";
import { ConsoleWatch, daemonSteps, machineBusyMs } from "./lib/vm.ts";

const DEADLINE = { deadlineMs: 300_000 };
/** #18: N pods started at once take at most this many times one pod's time (every guest starts its own agent). */
const GOAL_PARALLEL_RATIO = 2.0;

const PHASES = [
  ["criToCreate", "RunPodSandbox until the daemon's Create is done"],
  ["prepare", "Start: config, host probes, plan"],
  ["vmmSpawn", "VMM spawn (vhost-device-vsock up, QEMU exec)"],
  ["bootToKernel", "guest boot: QEMU + firmware until the kernel's first line"],
  ["kernel", "guest boot: kernel until it runs /sbin/init"],
  ["userspace", "guest boot: init + vmm-task until it listens on vsock"],
  ["agentConnect", "agent connect (vsock dial + Check answered)"],
  ["setup", "SetupSandbox + task API (the guest clock is set after Start)"],
  ["criAfterStart", "containerd after Start until RunPodSandbox returns"],
  ["createContainer", "CreateContainer"],
  ["startContainer", "StartContainer"],
] as const;
type Phase = (typeof PHASES)[number][0];
type Sample = { totalMs: number; podMs: number } & Record<Phase, number>;
/** The machine's busy CPU time over a span, ms (all cores), and the span's wall time. */
type Cpu = { busyMs: number; wallMs: number };

interface Summary {
  pods: number;
  p50Ms: number;
  p90Ms: number;
  podP50Ms: number;
  phasesP50Ms: Record<Phase, number>;
  samples: Sample[];
}

interface Result {
  run: RunInfo;
  serial: Summary;
  parallel: Summary & { concurrency: number; wallMs: number };
  /** All N up (wall clock) / one pod's p50, serially. */
  parallelRatio: Goal;
  /** Machine-wide CPU over each serial pod's start (and their p50s), and over the parallel starts. */
  cpu: { serial: Cpu[]; serialP50: Cpu; parallel: Cpu };
  /**
   * The ratio the CPU alone allows: N pods need N times one pod's CPU (p50 of the serial runs), which the machine's
   * cores deliver in no less than that / cores of wall time; divided by one pod's p50 time.
   */
  cpuFloorRatio: number;
}

async function podStart(env: Env, watch: ConsoleWatch, name: string): Promise<{ id: string; sample: Sample }> {
  const logDirectory = path.join(env.dir, "pods", name);
  await mkdir(logDirectory, { recursive: true });
  const config = {
    metadata: { name, namespace: "bench", uid: `${name}-uid`, attempt: 0 },
    hostname: name,
    logDirectory,
  };
  const t0 = Date.now();
  const { podSandboxId: id } = await env.runtime.runPodSandbox({ config, runtimeHandler: RUNTIME_HANDLER }, DEADLINE);
  const podAt = Date.now();
  const { containerId } = await env.runtime.createContainer(
    {
      podSandboxId: id,
      config: { metadata: { name: "sleeper", attempt: 0 }, image: { image: IMAGE }, command: ["sleep", "3600"] },
      sandboxConfig: config,
    },
    DEADLINE,
  );
  const createdAt = Date.now();
  await env.runtime.startContainer({ containerId }, DEADLINE);
  const startedAt = Date.now();
  const s = daemonSteps(env.daemon.log(), id);
  const c = watch.times(id);
  if (!s.created || !s.helper || !s.vmm || !s.agent || !s.running) {
    throw new Error(`the daemon's log lacks a step of ${id}: ${JSON.stringify(s)}`);
  }
  if (c.kernel === undefined || c.init === undefined || c.agent === undefined) {
    throw new Error(`the console of ${id} did not show every boot mark: ${JSON.stringify(c)}`);
  }
  return {
    id,
    sample: {
      totalMs: startedAt - t0,
      podMs: podAt - t0,
      criToCreate: s.created - t0,
      prepare: s.helper - s.created,
      vmmSpawn: s.vmm - s.helper,
      bootToKernel: c.kernel - s.vmm,
      kernel: c.init - c.kernel,
      userspace: c.agent - c.init,
      agentConnect: s.agent - c.agent,
      setup: s.running - s.agent,
      criAfterStart: podAt - s.running,
      createContainer: createdAt - podAt,
      startContainer: startedAt - createdAt,
    },
  };
}

async function removePod(env: Env, id: string): Promise<void> {
  await env.runtime.stopPodSandbox({ podSandboxId: id }, DEADLINE);
  await env.runtime.removePodSandbox({ podSandboxId: id }, DEADLINE);
}

function summarise(samples: Sample[]): Summary {
  return {
    pods: samples.length,
    p50Ms: ms(
      percentile(
        samples.map((s) => s.totalMs),
        0.5,
      ),
    ),
    p90Ms: ms(
      percentile(
        samples.map((s) => s.totalMs),
        0.9,
      ),
    ),
    podP50Ms: ms(
      percentile(
        samples.map((s) => s.podMs),
        0.5,
      ),
    ),
    phasesP50Ms: Object.fromEntries(
      PHASES.map(([p]) => [
        p,
        ms(
          percentile(
            samples.map((s) => s[p]),
            0.5,
          ),
        ),
      ]),
    ) as Record<Phase, number>,
    samples,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: "string", default: "3" }, parallel: { type: "string", default: "4" } },
  });
  const runs = Number(values.runs);
  const parallel = Number(values.parallel);
  if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(parallel) || parallel < 1) {
    throw new Error("--runs and --parallel must be positive integers");
  }
  const run = startRun();
  const env = await startEnv();
  onCleanup(() => env.teardown());
  const watch = new ConsoleWatch(path.join(env.dir, "state")).start();
  try {
    const serial: Sample[] = [];
    const serialCpu: Cpu[] = [];
    for (let i = 0; i < runs; i++) {
      const [busy0, t0] = [machineBusyMs(), Date.now()];
      const { id, sample } = await podStart(env, watch, `serial-${i}`);
      serialCpu.push({ busyMs: machineBusyMs() - busy0, wallMs: Date.now() - t0 });
      serial.push(sample);
      console.log(`  serial ${i + 1}/${runs}: ${(sample.totalMs / 1000).toFixed(2)} s`);
      await removePod(env, id);
    }
    const [busy0, t0] = [machineBusyMs(), Date.now()];
    const pods = await Promise.all(Array.from({ length: parallel }, (_, i) => podStart(env, watch, `parallel-${i}`)));
    const wallMs = Date.now() - t0;
    const parallelCpu = { busyMs: machineBusyMs() - busy0, wallMs };
    console.log(`  ${parallel} in parallel: all up in ${(wallMs / 1000).toFixed(2)} s`);
    await Promise.all(pods.map((p) => removePod(env, p.id)));

    const info = run.finish();
    const p50 = (key: keyof Cpu) =>
      percentile(
        serialCpu.map((c) => c[key]),
        0.5,
      );
    const serialP50: Cpu = { busyMs: p50("busyMs"), wallMs: p50("wallMs") };
    const result: Result = {
      run: info,
      serial: summarise(serial),
      parallel: { ...summarise(pods.map((p) => p.sample)), concurrency: parallel, wallMs },
      parallelRatio: goal(Number((wallMs / summarise(serial).p50Ms).toFixed(2)), GOAL_PARALLEL_RATIO, "max"),
      cpu: { serial: serialCpu, serialP50, parallel: parallelCpu },
      cpuFloorRatio: Number(((parallel * serialP50.busyMs) / info.cpus / serialP50.wallMs).toFixed(2)),
    };
    const out = publish("cri-start", result, markdown(result));
    printTables(result);
    console.log(`\nwrote ${out} and BENCHMARKS.md`);
  } catch (err) {
    (err as Error).message += `\n${env.logs(30)}`;
    throw err;
  } finally {
    await cleanup();
  }
}

function phaseRows(r: Result): Array<[string, number, number]> {
  return PHASES.map(([p, label]) => [label, r.serial.phasesP50Ms[p], r.parallel.phasesP50Ms[p]]);
}

function totalRows(r: Result): Array<[string, string, string, string]> {
  const s = (v: number) => (v / 1000).toFixed(2);
  return [
    [`serial (${r.serial.pods} pods, one at a time)`, s(r.serial.podP50Ms), s(r.serial.p50Ms), s(r.serial.p90Ms)],
    [
      `${r.parallel.concurrency} in parallel (all up in ${s(r.parallel.wallMs)} s)`,
      s(r.parallel.podP50Ms),
      s(r.parallel.p50Ms),
      s(r.parallel.p90Ms),
    ],
  ];
}

const TOTAL_HEADERS = ["how", "RunPodSandbox p50 s", "pod + container started p50 s", "p90 s"];

function printTables(r: Result): void {
  console.log("\nphases, p50 ms");
  console.table(
    phaseRows(r).map(([phase, serial, parallel]) => ({
      phase,
      serial,
      [`${r.parallel.concurrency} in parallel`]: parallel,
    })),
  );
  console.log(`${r.run.cpus} CPUs, load average ${r.run.loadavgStart.join(" ")} -> ${r.run.loadavgEnd.join(" ")}`);
  console.table(totalRows(r).map((row) => Object.fromEntries(TOTAL_HEADERS.map((h, i) => [h, row[i]]))));
  console.log(`${ratioLabel(r)}: ${verdict(r.parallelRatio)}`);
  console.log(cpuLine(r));
}

/** What one pod's start costs the machine in CPU, and the floor that puts under the parallel ratio. */
function cpuLine(r: Result): string {
  const { busyMs: busy, wallMs: wall } = r.cpu.serialP50;
  const cores = r.run.cpus;
  return (
    `CPU: one pod's start kept the machine ${(busy / wall).toFixed(2)} cores busy (p50 ${(busy / 1000).toFixed(2)} ` +
    `CPU-s over ${(wall / 1000).toFixed(2)} s; /proc/stat, every process on the machine), so ` +
    `${r.parallel.concurrency} pods need ${((r.parallel.concurrency * busy) / 1000).toFixed(1)} CPU-s, which ${cores} ` +
    `cores deliver in no less than ${r.cpuFloorRatio} times one pod's time: the floor under the ratio, whatever the ` +
    `overlap. The ${r.parallel.concurrency} at once used ${(r.cpu.parallel.busyMs / 1000).toFixed(1)} CPU-s, ` +
    `${Math.round((r.cpu.parallel.busyMs / (cores * r.cpu.parallel.wallMs)) * 100)}% of the ${cores} cores over ` +
    `their ${(r.cpu.parallel.wallMs / 1000).toFixed(2)} s.`
  );
}

const ratioLabel = (r: Result) => `${r.parallel.concurrency} pods at once / 1 pod (all up / serial p50)`;

function markdown(r: Result): string {
  return [
    "## CRI: pod + container start through containerd",
    "",
    runLine(r.run),
    "A private containerd 2.1 (CRI, the `vmm` proxy sandboxer, overlayfs) drives vmm-sandboxer from source at log " +
      "level debug (`testkit/containerd.ts`); each pod is a 1 vCPU, 512 MiB QEMU TCG guest, on the run's CNI bridge, " +
      "and one busybox `sleep 3600` container. Timed from RunPodSandbox to StartContainer's return.",
    "",
    mdTable(TOTAL_HEADERS, totalRows(r)),
    "",
    `Goal (#18): ${ratioLabel(r)}: ${verdict(r.parallelRatio)}.`,
    "",
    `${cpuLine(r)}`,
    "",
    ...phasesSection(["phase", "serial", `${r.parallel.concurrency} in parallel`], phaseRows(r)),
    "Phases from the daemon's log timestamps and the serial console polled from the host every 20 ms, as in " +
      "sandbox-start. In parallel the 4 guests share the 2 cores, so their boots stretch.",
  ].join("\n");
}

await runBenchmark("cri-start", main);
