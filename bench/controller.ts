// gRPC Controller Status against the real daemon (bin/vmm-sandboxer) with one sandbox running: the found path
// (a READY sandbox) and the fail-fast NotFound path, serial on one connection, 8 concurrent callers sharing one
// connection (as containerd's one channel would), and 8 clients each on its own connection. Rounds of each
// interleave so machine load hits them alike; the daemon's CPU time per call comes from /proc/<pid>/stat.
// Run: node --import tsx bench/controller.ts   (writes bench/results/controller.json)

import os from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  Controller,
  ControllerStatusRequestSchema,
} from "../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { requireArtifacts, writeConfig } from "../testkit/daemon.ts";
import { cleanup, runBenchmark, scratchDir } from "./lib/cleanup.ts";
import { mdTable, percentile, publish, type RunInfo, runLine, startRun } from "./lib/report.ts";
import { procCpuUs, startBundledDaemon } from "./lib/vm.ts";

const ROUNDS = 3;
const ROUND_SECONDS = 2;
const CONCURRENCY = 8;
const WARM_UP_CALLS = 500;
const SANDBOX = "pod-bench";

type Target = "found" | "notFound";
type Mode = "serial" | "sharedChannel" | "ownChannels";

interface Measured {
  calls: number;
  callsPerSec: number;
  /** Per-call latency, serial mode only. */
  p50us?: number;
  p99us?: number;
  /** Daemon CPU (user + system) per call. */
  daemonCpuUsPerCall: number;
}

interface Result {
  run: RunInfo;
  rounds: number;
  roundSeconds: number;
  concurrency: number;
  results: Record<Target, Record<Mode, Measured>>;
}

const STATUS = Controller.method.status;
const STATUS_PATH = `/${Controller.typeName}/${STATUS.name}`;

/** A raw grpc-js client; `own` gives it a connection of its own instead of the process-wide shared one. */
function channel(sock: string, own: boolean): grpc.Client {
  return new grpc.Client(
    `unix://${sock}`,
    grpc.credentials.createInsecure(),
    own ? { "grpc.use_local_subchannel_pool": 1 } : {},
  );
}

function statusCall(client: grpc.Client, sandboxId: string, target: Target): () => Promise<void> {
  const req = create(ControllerStatusRequestSchema, { sandboxId });
  return () =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        STATUS_PATH,
        (r: typeof req) => Buffer.from(toBinary(ControllerStatusRequestSchema, r)),
        (b: Buffer) => fromBinary(STATUS.output, b),
        req,
        (err) => {
          const ok = target === "found" ? !err : err?.code === grpc.status.NOT_FOUND;
          if (ok) resolve();
          else reject(err ?? new Error(`Status of ${sandboxId} answered, expected NotFound`));
        },
      );
    });
}

class Tally {
  calls = 0;
  ms = 0;
  cpu = 0;
  readonly latencies: number[] = [];

  result(serial: boolean): Measured {
    const m: Measured = {
      calls: this.calls,
      callsPerSec: Math.round(this.calls / (this.ms / 1000)),
      daemonCpuUsPerCall: Math.round(this.cpu / this.calls),
    };
    if (serial) {
      m.p50us = Math.round(percentile(this.latencies, 0.5));
      m.p99us = Math.round(percentile(this.latencies, 0.99));
    }
    return m;
  }
}

/** `callers` loops (each with its own call function) for `seconds`; counts into the tally. */
async function round(
  calls: Array<() => Promise<void>>,
  seconds: number,
  tally: Tally,
  daemonPid: number,
): Promise<void> {
  const cpu0 = procCpuUs(daemonPid);
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  await Promise.all(
    calls.map(async (call) => {
      while (performance.now() < stopAt) {
        const c0 = performance.now();
        await call();
        if (calls.length === 1) tally.latencies.push((performance.now() - c0) * 1000);
        tally.calls++;
      }
    }),
  );
  tally.ms += performance.now() - t0;
  tally.cpu += procCpuUs(daemonPid) - cpu0;
}

async function main(): Promise<void> {
  requireArtifacts(["vmlinux.bin", "kuasar.img", "vmm-sandboxer"]);
  const run = startRun();
  const dir = await scratchDir("bench-ctrl-");
  const configFile = path.join(dir, "config.toml");
  await writeConfig(configFile);
  // info level, as installed: at debug the daemon logs every failed call, and NotFound would measure the logger
  const daemon = await startBundledDaemon(dir, configFile, ["--log-level", "info"]);
  const pid = daemon.proc.pid!;
  const clients: grpc.Client[] = [];
  try {
    const shared = channel(daemon.sock, false);
    clients.push(shared);
    const own = Array.from({ length: CONCURRENCY }, () => channel(daemon.sock, true));
    clients.push(...own);
    const admin = channel(daemon.sock, true);
    clients.push(admin);
    const unary = <M extends keyof typeof Controller.method>(m: M, req: object) =>
      new Promise<void>((resolve, reject) => {
        const method = Controller.method[m];
        admin.makeUnaryRequest(
          `/${Controller.typeName}/${method.name}`,
          (r: object) => Buffer.from(toBinary(method.input, create(method.input, r as never))),
          (b: Buffer) => b,
          req,
          { deadline: Date.now() + 240_000 },
          (err) => (err ? reject(err) : resolve()),
        );
      });
    console.log(`  starting sandbox ${SANDBOX} (TCG boot)`);
    await unary("create", { sandboxId: SANDBOX });
    await unary("start", { sandboxId: SANDBOX });

    const results = {} as Result["results"];
    for (const target of ["found", "notFound"] as const) {
      const id = target === "found" ? SANDBOX : "no-such-sandbox";
      const modes: Record<Mode, Array<() => Promise<void>>> = {
        serial: [statusCall(shared, id, target)],
        sharedChannel: Array.from({ length: CONCURRENCY }, () => statusCall(shared, id, target)),
        ownChannels: own.map((c) => statusCall(c, id, target)),
      };
      for (const calls of Object.values(modes))
        for (let i = 0; i < WARM_UP_CALLS / calls.length; i++) await Promise.all(calls.map((c) => c()));
      const tallies: Record<Mode, Tally> = {
        serial: new Tally(),
        sharedChannel: new Tally(),
        ownChannels: new Tally(),
      };
      for (let r = 0; r < ROUNDS; r++) {
        for (const mode of Object.keys(modes) as Mode[]) await round(modes[mode], ROUND_SECONDS, tallies[mode], pid);
      }
      results[target] = {
        serial: tallies.serial.result(true),
        sharedChannel: tallies.sharedChannel.result(false),
        ownChannels: tallies.ownChannels.result(false),
      };
    }
    await unary("shutdown", { sandboxId: SANDBOX });
    const result: Result = {
      run: run.finish(),
      rounds: ROUNDS,
      roundSeconds: ROUND_SECONDS,
      concurrency: CONCURRENCY,
      results,
    };
    const out = publish("controller", result, markdown(result));
    printTables(result);
    console.log(`\nwrote ${out} and BENCHMARKS.md`);
  } finally {
    for (const c of clients) c.close();
    await cleanup();
  }
}

const MODE_LABEL: Record<Mode, string> = {
  serial: "serial, one connection",
  sharedChannel: `${CONCURRENCY} concurrent callers, one connection`,
  ownChannels: `${CONCURRENCY} clients, a connection each`,
};
const TARGET_LABEL: Record<Target, string> = {
  found: "Status of a running sandbox",
  notFound: "Status of an unknown id (NotFound)",
};

function rows(r: Result): Array<Array<string | number>> {
  return (["found", "notFound"] as const).flatMap((t) =>
    (Object.keys(MODE_LABEL) as Mode[]).map((m) => {
      const x = r.results[t][m];
      return [TARGET_LABEL[t], MODE_LABEL[m], x.callsPerSec, x.p50us ?? "", x.p99us ?? "", x.daemonCpuUsPerCall];
    }),
  );
}

const HEADERS = ["call", "clients", "calls/s", "p50 µs", "p99 µs", "daemon CPU µs/call"];

function printTables(r: Result): void {
  console.log(
    `\n${r.run.cpus} CPUs (${os.cpus()[0]?.model}), load average ${r.run.loadavgStart.join(" ")} -> ${r.run.loadavgEnd.join(" ")}`,
  );
  console.table(rows(r).map((row) => Object.fromEntries(HEADERS.map((h, i) => [h, row[i]]))));
}

function markdown(r: Result): string {
  return [
    "## Controller: gRPC Status calls/s against the daemon",
    "",
    runLine(r.run),
    `Daemon: \`bin/vmm-sandboxer\` with one sandbox running (QEMU TCG); ${r.rounds} interleaved rounds of ` +
      `${r.roundSeconds} s per row after a warm-up; the client runs in the same 2-core machine, so client and daemon ` +
      "compete for the CPUs. No goal is set for this figure.",
    "",
    mdTable(HEADERS, rows(r)),
  ].join("\n");
}

await runBenchmark("controller", main);
