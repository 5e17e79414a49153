// ttrpc benchmark, servers in child processes:
// - unary round trips on one connection against a raw unix-socket echo of
//   frames of the same size (rounds interleaved so machine load hits both alike);
// - streaming throughput both ways next to a raw unix stream of the same chunk
//   size (no per-message work: Node's ceiling here), also in interleaved rounds,
//   between fresh processes per message size,
//   each direction and size against its goal and against the figures recorded
//   before the data path changed (#18): the "before" record of the previous
//   result, or that result itself when it has none; delete "before" from
//   bench/results/ttrpc.json to compare with the latest run instead.
// Run: node --import tsx bench/ttrpc.ts   (writes bench/results/ttrpc.json and its section of BENCHMARKS.md)

import { type ChildProcess, fork } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { Echo, EchoMessageSchema } from "../runtime/protos/gen/ttrpc/testing/echo_pb.ts";
import { encodeRequest, encodeRoute } from "../runtime/ttrpc/envelope.ts";
import { HEADER_LENGTH, TtrpcClient, TtrpcServer } from "../runtime/ttrpc/index.ts";
import {
  type Goal,
  goal,
  mdTable,
  publish,
  type RunInfo,
  resultsDir,
  runLine,
  startRun,
  verdict,
} from "./lib/report.ts";

const UNARY_PAYLOADS = [64, 4096];
const ROUNDS = 5;
const ROUND_SECONDS = 0.5;
const CONCURRENCY = 32;
const STREAM_MESSAGE_SIZES = [2 ** 20, 2 ** 16];
const STREAM_ROUNDS = 5;
const STREAM_ROUND_SECONDS = 1;
const LONG_LIVED_ROUNDS = 3;
const WARM_UP_SECONDS = 0.5;
const GOAL_RATIO = 2.0;
const GOAL_STREAM_GBPS = 1;
const DIRECTIONS = ["serverToClient", "clientToServer"] as const;
type Direction = (typeof DIRECTIONS)[number];
const DIRECTION_NAMES: Record<Direction, string> = {
  serverToClient: "server->client",
  clientToServer: "client->server",
};

type CpuUsage = NodeJS.CpuUsage;
type Measured = ReturnType<Sampler["result"]> & { concurrentCallsPerSec: number };

interface StreamResult {
  messageBytes: number;
  rawBytesPerSec: number;
  serverToClientBytesPerSec: number;
  clientToServerBytesPerSec: number;
  /** Each round's rate (bytes/s), to show the spread the machine's load puts on the averages above. */
  rounds: Record<"raw" | Direction, number[]>;
}

/** Streaming figures of an earlier run, and when and where they were measured. */
interface Before {
  when: string;
  commit: string;
  node: string;
  loadavg: string;
  /** How the streams were measured, when not as now. */
  layout?: string;
  streaming: Array<Omit<StreamResult, "rounds">>;
}

interface StreamGoal {
  messageBytes: number;
  direction: Direction;
  /** GB/s, two decimals. */
  goal: Goal;
  beforeGbps: number | undefined;
}

interface BenchResult {
  run: RunInfo;
  goals: { unaryRatioP50: number; streamGbps: number };
  unary: Array<{
    payloadBytes: number;
    frameBytes: number;
    raw: Measured;
    ttrpc: Measured;
    ratioP50: number;
    ratioCallsPerSec: number;
  }>;
  streaming: StreamResult[];
  /** 64 KiB between the processes that ran the unary part first. */
  longLived: StreamResult;
  streamGoals: StreamGoal[];
  before: Before | undefined;
}

/** Child processes answer "cpu" with their CPU time so far. */
function answerCpuQueries(): void {
  process.on("message", (m) => {
    if (m === "cpu") process.send?.(process.cpuUsage());
  });
  process.on("disconnect", () => process.exit(0));
}

function serveRaw(echoPath: string, streamPath: string): void {
  net
    .createServer((sock) => {
      sock.on("data", (chunk) => sock.write(chunk));
      sock.on("error", () => sock.destroy());
    })
    .listen(echoPath, () => {
      // stream source: the client writes (chunk size, count); the same buffer goes out count times
      net
        .createServer((sock) => {
          sock.on("error", () => sock.destroy());
          sock.once("data", (req) => {
            const chunk = Buffer.alloc(req.readUInt32BE(0), 7);
            let left = req.readUInt32BE(4);
            // same buffering policy as the ttrpc channel: keep up to 1 MiB queued
            const pump = () => {
              while (left > 0 && sock.writableLength < 1 << 20) {
                left--;
                sock.write(chunk);
              }
              if (left > 0) sock.once("drain", pump);
              else sock.end();
            };
            pump();
          });
        })
        .listen(streamPath, () => process.send?.("ready"));
    });
  answerCpuQueries();
}

function serveTtrpc(socketPath: string): void {
  const server = new TtrpcServer().register(Echo, {
    unary: (req) => req,
    serverStream: async (req, out) => {
      const msg = create(EchoMessageSchema, { payload: Buffer.alloc(req.seq, 7) });
      for (let i = 0; i < req.count; i++) await out.send(msg);
    },
    clientStream: async (reqs) => {
      let bytes = 0;
      for await (const r of reqs) bytes += r.payload.length;
      return { count: bytes };
    },
  });
  const listener = net.createServer();
  server.serve(listener);
  listener.listen(socketPath, () => process.send?.("ready"));
  answerCpuQueries();
}

async function startChild(args: string[]): Promise<ChildProcess> {
  const child = fork(fileURLToPath(import.meta.url), args, { stdio: "inherit" });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`bench server ${args[0]} exited with ${code}`)));
  });
  return child;
}

function childCpu(child: ChildProcess): Promise<CpuUsage> {
  return new Promise((resolve) => {
    child.once("message", (m) => resolve(m as CpuUsage));
    child.send("cpu");
  });
}

async function connect(socketPath: string): Promise<net.Socket> {
  const sock = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  return sock;
}

const round1 = (v: number) => Math.round(v * 10) / 10;
const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
const cpuMicros = (u: CpuUsage) => u.user + u.system;
const gbps = (bytesPerSec: number) => Number((bytesPerSec / 1e9).toFixed(2));

/** Sequential round trips, measured in rounds; returns per-call wall times (ns) and CPU (µs) of both sides. */
class Sampler {
  readonly samples: number[] = [];
  elapsedNs = 0;
  cpuUs = 0;

  constructor(
    private readonly roundTrip: () => Promise<void>,
    private readonly server: ChildProcess,
  ) {}

  async warmUp(): Promise<void> {
    for (let i = 0; i < 2000; i++) await this.roundTrip();
  }

  async round(seconds: number): Promise<void> {
    const serverBefore = await childCpu(this.server);
    const before = process.cpuUsage();
    const start = process.hrtime.bigint();
    const stop = start + BigInt(Math.round(seconds * 1e9));
    let now = start;
    while (now < stop) {
      const t0 = process.hrtime.bigint();
      await this.roundTrip();
      now = process.hrtime.bigint();
      this.samples.push(Number(now - t0));
    }
    this.elapsedNs += Number(now - start);
    this.cpuUs += cpuMicros(process.cpuUsage(before));
    const serverAfter = await childCpu(this.server);
    this.cpuUs += cpuMicros(serverAfter) - cpuMicros(serverBefore);
  }

  result() {
    const sorted = Float64Array.from(this.samples).sort();
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! / 1000;
    return {
      calls: sorted.length,
      callsPerSec: Math.round(sorted.length / (this.elapsedNs / 1e9)),
      p50us: round1(at(0.5)),
      p99us: round1(at(0.99)),
      cpuUsPerCall: round1(this.cpuUs / sorted.length),
    };
  }
}

/** `CONCURRENCY` callers looping for `seconds` on one connection: calls/s. */
async function concurrentRate(roundTrip: () => Promise<void>, seconds: number): Promise<number> {
  const start = performance.now();
  const stopAt = start + seconds * 1000;
  let calls = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < stopAt) {
        await roundTrip();
        calls++;
      }
    }),
  );
  return Math.round(calls / ((performance.now() - start) / 1000));
}

/** Raw echo: write `size` bytes, resolve when `size` bytes came back (FIFO for concurrent callers). */
function rawEcho(sock: net.Socket, size: number): () => Promise<void> {
  const frame = Buffer.alloc(size, 1);
  const waiters: Array<() => void> = [];
  let received = 0;
  sock.on("data", (chunk) => {
    received += chunk.length;
    while (received >= size && waiters.length > 0) {
      received -= size;
      waiters.shift()!();
    }
  });
  return () =>
    new Promise<void>((resolve) => {
      waiters.push(resolve);
      sock.write(frame);
    });
}

/** Size of the Request frame (header + envelope) carrying `message` to Echo/Unary. */
function requestFrameBytes(message: Uint8Array): number {
  const parts = encodeRequest(encodeRoute(Echo.typeName, Echo.method.unary.name), [message], 0, []);
  return HEADER_LENGTH + parts.reduce((n, p) => n + p.length, 0);
}

/** Bytes moved and the time it took, summed over rounds, and each round's rate. */
class Rate {
  private bytes = 0;
  private ms = 0;
  readonly rounds: number[] = [];

  add([bytes, ms]: [number, number]): void {
    this.bytes += bytes;
    this.ms += ms;
    this.rounds.push(Math.round(bytes / (ms / 1000)));
  }

  perSec(): number {
    return Math.round(this.bytes / (this.ms / 1000));
  }
}

/** Raw unix stream of `messageBytes` chunks for `seconds`. */
async function rawStream(socketPath: string, messageBytes: number, seconds: number): Promise<[number, number]> {
  const sock = await connect(socketPath);
  const req = Buffer.alloc(8);
  req.writeUInt32BE(messageBytes, 0);
  req.writeUInt32BE(0xffffffff, 4);
  let bytes = 0;
  sock.on("data", (d) => {
    bytes += d.length;
  });
  const t0 = performance.now();
  sock.write(req);
  await sleep(seconds * 1000);
  const result: [number, number] = [bytes, performance.now() - t0];
  sock.destroy();
  return result;
}

/** Server-streaming for `seconds` on a fresh connection (closing it stops the server's handler). */
async function ttrpcDown(socketPath: string, messageBytes: number, seconds: number): Promise<[number, number]> {
  const client = new TtrpcClient(await connect(socketPath));
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  let bytes = 0;
  for await (const m of client.service(Echo).serverStream({ seq: messageBytes, count: 0xffffffff })) {
    bytes += m.payload.length;
    if (performance.now() > stopAt) break;
  }
  const result: [number, number] = [bytes, performance.now() - t0];
  client.close();
  return result;
}

/** Client-streaming for `seconds`; the server reports what it received. */
async function ttrpcUp(socketPath: string, messageBytes: number, seconds: number): Promise<[number, number]> {
  const client = new TtrpcClient(await connect(socketPath));
  const payload = Buffer.alloc(messageBytes, 9);
  const t0 = performance.now();
  const stopAt = t0 + seconds * 1000;
  const call = client.service(Echo).clientStream();
  while (performance.now() < stopAt) await call.send({ payload });
  const bytes = (await call.closeAndReceive()).count;
  const result: [number, number] = [bytes, performance.now() - t0];
  client.close();
  return result;
}

/**
 * Streams one message size between processes of its own (client, ttrpc server, raw server). In a process that ran
 * the unary part or another size first, V8 ran a mark-compact after nearly every scavenge and the receive rate, raw
 * and ttrpc alike, halved; fresh processes measure the data path, not the heap state an earlier part left behind.
 */
async function streamInFreshProcesses(dir: string, messageBytes: number): Promise<StreamResult> {
  const echoPath = path.join(dir, `echo-${messageBytes}.sock`);
  const streamPath = path.join(dir, `stream-${messageBytes}.sock`);
  const ttrpcPath = path.join(dir, `ttrpc-${messageBytes}.sock`);
  const rawServer = await startChild(["--serve-raw", echoPath, streamPath]);
  const ttrpcServer = await startChild(["--serve-ttrpc", ttrpcPath]);
  try {
    const client = fork(
      fileURLToPath(import.meta.url),
      ["--stream-client", String(messageBytes), streamPath, ttrpcPath],
      { stdio: "inherit" },
    );
    return await new Promise<StreamResult>((resolve, reject) => {
      client.once("message", (m) => resolve(m as StreamResult));
      client.once("exit", (code) => reject(new Error(`streaming client for ${messageBytes} B exited with ${code}`)));
    });
  } finally {
    rawServer.kill();
    ttrpcServer.kill();
  }
}

/** The client side of one message size: warm-up, then raw, server->client and client->server in rounds. */
async function measureStream(
  messageBytes: number,
  streamPath: string,
  ttrpcPath: string,
  rounds: number,
): Promise<StreamResult> {
  // warm up both directions (JIT, heap and malloc growth) before timing
  await ttrpcDown(ttrpcPath, messageBytes, WARM_UP_SECONDS);
  await ttrpcUp(ttrpcPath, messageBytes, WARM_UP_SECONDS);
  const raw = new Rate();
  const down = new Rate();
  const up = new Rate();
  for (let r = 0; r < rounds; r++) {
    raw.add(await rawStream(streamPath, messageBytes, STREAM_ROUND_SECONDS));
    down.add(await ttrpcDown(ttrpcPath, messageBytes, STREAM_ROUND_SECONDS));
    up.add(await ttrpcUp(ttrpcPath, messageBytes, STREAM_ROUND_SECONDS));
  }
  return {
    messageBytes,
    rawBytesPerSec: raw.perSec(),
    serverToClientBytesPerSec: down.perSec(),
    clientToServerBytesPerSec: up.perSec(),
    rounds: { raw: raw.rounds, serverToClient: down.rounds, clientToServer: up.rounds },
  };
}

async function streamClient(messageBytes: number, streamPath: string, ttrpcPath: string): Promise<void> {
  const result = await measureStream(messageBytes, streamPath, ttrpcPath, STREAM_ROUNDS);
  process.send?.(result, () => process.exit(0));
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ttrpc-bench-"));
  const echoPath = path.join(dir, "echo.sock");
  const streamPath = path.join(dir, "stream.sock");
  const ttrpcPath = path.join(dir, "ttrpc.sock");
  const rawServer = await startChild(["--serve-raw", echoPath, streamPath]);
  const ttrpcServer = await startChild(["--serve-ttrpc", ttrpcPath]);
  const before = readBefore();
  const run = startRun();
  try {
    const unary: BenchResult["unary"] = [];
    for (const payloadBytes of UNARY_PAYLOADS) {
      const msg = create(EchoMessageSchema, { payload: Buffer.alloc(payloadBytes, 3), seq: 1 });
      const frameBytes = requestFrameBytes(toBinary(EchoMessageSchema, msg));
      const rawSock = await connect(echoPath);
      const raw = rawEcho(rawSock, frameBytes);
      const client = new TtrpcClient(await connect(ttrpcPath));
      const echo = client.service(Echo);
      const call = async () => {
        await echo.unary(msg);
      };

      const rawSampler = new Sampler(raw, rawServer);
      const ttrpcSampler = new Sampler(call, ttrpcServer);
      await rawSampler.warmUp();
      await ttrpcSampler.warmUp();
      for (let r = 0; r < ROUNDS; r++) {
        await rawSampler.round(ROUND_SECONDS);
        await ttrpcSampler.round(ROUND_SECONDS);
      }
      const rawConcurrent = await concurrentRate(raw, 1);
      const ttrpcConcurrent = await concurrentRate(call, 1);
      rawSock.destroy();
      client.close();

      const rawRes = { ...rawSampler.result(), concurrentCallsPerSec: rawConcurrent };
      const ttrpcRes = { ...ttrpcSampler.result(), concurrentCallsPerSec: ttrpcConcurrent };
      unary.push({
        payloadBytes,
        frameBytes,
        raw: rawRes,
        ttrpc: ttrpcRes,
        ratioP50: ratio(ttrpcRes.p50us, rawRes.p50us),
        ratioCallsPerSec: ratio(rawRes.callsPerSec, ttrpcRes.callsPerSec),
      });
    }

    // the same 64 KiB stream between the processes that ran the unary part: no goal, it shows what their heap
    // state costs (see streamInFreshProcesses)
    const longLived = await measureStream(2 ** 16, streamPath, ttrpcPath, LONG_LIVED_ROUNDS);
    const streaming: BenchResult["streaming"] = [];
    for (const messageBytes of STREAM_MESSAGE_SIZES) {
      streaming.push(await streamInFreshProcesses(dir, messageBytes));
    }

    const result: BenchResult = {
      run: run.finish(),
      goals: { unaryRatioP50: GOAL_RATIO, streamGbps: GOAL_STREAM_GBPS },
      unary,
      streaming,
      longLived,
      streamGoals: streaming.flatMap((st) =>
        DIRECTIONS.map((direction) => {
          const was = before?.streaming.find((b) => b.messageBytes === st.messageBytes);
          return {
            messageBytes: st.messageBytes,
            direction,
            goal: goal(gbps(st[`${direction}BytesPerSec`]), GOAL_STREAM_GBPS, "min"),
            beforeGbps: was && gbps(was[`${direction}BytesPerSec`]),
          };
        }),
      ),
      before,
    };
    printTables(result);
    const out = publish("ttrpc", result, markdown(result));
    console.log(`\nwrote ${out} and BENCHMARKS.md`);
  } finally {
    rawServer.kill();
    ttrpcServer.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The figures to compare with: the previous result's "before" record, carried from run to run, or the previous
 * result itself (the first run after the data path changed). Results written before runs had a RunInfo carry
 * their when/node/loadavg at the top.
 */
function readBefore(): Before | undefined {
  const file = path.join(resultsDir, "ttrpc.json");
  if (!existsSync(file)) return undefined;
  const prev = JSON.parse(readFileSync(file, "utf8"));
  if (prev.before) return prev.before as Before;
  const run = prev.run ?? { when: prev.when, commit: "commit not recorded", node: prev.node, loadavgEnd: prev.loadavg };
  return {
    when: run.when,
    commit: run.commit,
    node: run.node,
    loadavg: `${run.loadavgEnd.join(" / ")} at the end`,
    ...(prev.run ? {} : { layout: "streams between the processes that ran the unary part first" }),
    streaming: (prev.streaming as StreamResult[]).map(({ rounds: _, ...figures }) => figures),
  };
}

/**
 * One row per message size and direction: now and before, each also as a share of the raw stream measured in the
 * same run (the machine's load moves both alike), and now against the goal.
 */
function streamRows(r: BenchResult): Array<Array<string | number>> {
  const share = (v: number, raw: number) => `${Math.round((v / raw) * 100)}%`;
  return r.streamGoals.map((g) => {
    const st = r.streaming.find((s) => s.messageBytes === g.messageBytes)!;
    const was = r.before?.streaming.find((b) => b.messageBytes === g.messageBytes);
    const rounds = st.rounds[g.direction].map(gbps);
    return [
      `${g.messageBytes >> 10} KiB`,
      DIRECTION_NAMES[g.direction],
      gbps(st.rawBytesPerSec),
      g.goal.measured,
      share(st[`${g.direction}BytesPerSec`], st.rawBytesPerSec),
      `${Math.min(...rounds)}-${Math.max(...rounds)}`,
      was ? `${gbps(was[`${g.direction}BytesPerSec`])} (raw ${gbps(was.rawBytesPerSec)})` : "-",
      was ? share(was[`${g.direction}BytesPerSec`], was.rawBytesPerSec) : "-",
      verdict(g.goal, " GB/s"),
    ];
  });
}

const STREAM_HEADERS = [
  "message",
  "direction",
  "raw stream (ceiling)",
  "now",
  "now / raw",
  "rounds (min-max)",
  "before",
  "before / raw",
  "now vs goal",
];

function slowerLines(r: BenchResult): string[] {
  return STREAM_MESSAGE_SIZES.map((size) => {
    const goals = r.streamGoals.filter((g) => g.messageBytes === size);
    const slower = goals.reduce((a, b) => (b.goal.measured < a.goal.measured ? b : a));
    const was = goals.map((g) => g.beforeGbps).filter((v) => v !== undefined);
    const wasText = was.length === goals.length ? ` (before: ${Math.min(...was)} GB/s)` : "";
    return `${size >> 10} KiB, slower direction (${DIRECTION_NAMES[slower.direction]}): ${verdict(slower.goal, " GB/s")}${wasText}`;
  });
}

function longLivedLine(r: BenchResult): string {
  const l = r.longLived;
  return (
    `Each size streams between fresh processes. Between the processes that ran the unary part first, 64 KiB ` +
    `streams at ${gbps(l.serverToClientBytesPerSec)} GB/s server->client and ${gbps(l.clientToServerBytesPerSec)} ` +
    `GB/s client->server (raw ${gbps(l.rawBytesPerSec)}; ${LONG_LIVED_ROUNDS} rounds, no goal): V8 runs a ` +
    "mark-compact after nearly every scavenge in such a process and the receiving side slows down, raw or ttrpc."
  );
}

function beforeLine(b: Before | undefined): string {
  if (!b) return "No earlier result to compare with.";
  const layout = b.layout ? `; ${b.layout}` : "";
  return `"before": the run of ${b.when.slice(0, 16).replace("T", " ")} UTC (${b.commit}, node ${b.node}, load average ${b.loadavg}${layout}).`;
}

function printTables(r: BenchResult): void {
  console.log(runLine(r.run));
  console.log(`\nunary round trip on one connection (${ROUNDS} interleaved rounds of ${ROUND_SECONDS} s each)`);
  console.table(
    r.unary.flatMap((u) =>
      (["raw", "ttrpc"] as const).map((what) => ({
        payload: `${u.payloadBytes} B (frame ${u.frameBytes} B)`,
        what: what === "raw" ? "raw echo" : "ttrpc",
        "p50 µs": u[what].p50us,
        "p99 µs": u[what].p99us,
        "calls/s": u[what].callsPerSec,
        [`calls/s x${CONCURRENCY}`]: u[what].concurrentCallsPerSec,
        "cpu µs/call": u[what].cpuUsPerCall,
        "p50 ratio":
          what === "raw" ? "" : `${u.ratioP50} ${u.ratioP50 <= GOAL_RATIO ? "ok" : "MISSED"} (<= ${GOAL_RATIO})`,
      })),
    ),
  );
  console.log(
    `streaming throughput over unix (GB/s), ${STREAM_ROUNDS} interleaved rounds of ${STREAM_ROUND_SECONDS} s`,
  );
  console.table(streamRows(r).map((row) => Object.fromEntries(STREAM_HEADERS.map((h, i) => [h, row[i]]))));
  for (const line of slowerLines(r)) console.log(line);
  console.log(beforeLine(r.before));
  console.log(longLivedLine(r));
}

function markdown(r: BenchResult): string {
  const pass = (ok: boolean) => (ok ? "pass" : "MISS");
  return [
    "## ttrpc: unary round trips and streaming vs raw unix sockets",
    "",
    `${runLine(r.run)} Client and servers (child processes) share the machine.`,
    "",
    `Unary round trips on one connection, ${ROUNDS} interleaved rounds of ${ROUND_SECONDS} s (raw: an echo of frames ` +
      "of the same size):",
    "",
    mdTable(
      ["payload", "what", "p50 µs", "p99 µs", "calls/s", `calls/s x${CONCURRENCY}`, "cpu µs/call", "p50 ratio vs goal"],
      r.unary.flatMap((u) =>
        (["raw", "ttrpc"] as const).map((what) => [
          `${u.payloadBytes} B (frame ${u.frameBytes} B)`,
          what === "raw" ? "raw echo" : "ttrpc",
          u[what].p50us,
          u[what].p99us,
          u[what].callsPerSec,
          u[what].concurrentCallsPerSec,
          u[what].cpuUsPerCall,
          what === "raw"
            ? ""
            : `${u.ratioP50} vs <= ${r.goals.unaryRatioP50}: ${pass(u.ratioP50 <= r.goals.unaryRatioP50)}`,
        ]),
      ),
    ),
    "",
    `Streaming throughput over unix (GB/s), ${STREAM_ROUNDS} interleaved rounds of ${STREAM_ROUND_SECONDS} s ` +
      `(the mean over the rounds, and the slowest and fastest round). ${beforeLine(r.before)}`,
    "",
    mdTable(STREAM_HEADERS, streamRows(r)),
    "",
    ...slowerLines(r).map((l) => `- ${l}`),
    "",
    longLivedLine(r),
  ].join("\n");
}

const role = process.argv[2];
if (role === "--serve-raw") serveRaw(process.argv[3]!, process.argv[4]!);
else if (role === "--serve-ttrpc") serveTtrpc(process.argv[3]!);
else if (role === "--stream-client") await streamClient(Number(process.argv[3]), process.argv[4]!, process.argv[5]!);
else await main();
