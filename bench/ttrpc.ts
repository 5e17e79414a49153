// ttrpc benchmark, servers in child processes:
// - unary round trips on one connection against a raw unix-socket echo of
//   frames of the same size (rounds interleaved so machine load hits both alike);
// - streaming throughput both ways next to a raw unix stream of the same chunk
//   size (no per-message work: Node's ceiling here), also in interleaved rounds.
// Run: node --import tsx bench/ttrpc.ts   (writes bench/results/ttrpc.json and its section of BENCHMARKS.md)

import { type ChildProcess, fork } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { Echo, EchoMessageSchema } from "../runtime/protos/gen/ttrpc/testing/echo_pb.ts";
import { encodeRequest, encodeRoute } from "../runtime/ttrpc/envelope.ts";
import { HEADER_LENGTH, TtrpcClient, TtrpcServer } from "../runtime/ttrpc/index.ts";
import { mdTable, updateBenchmarksMd } from "./lib/report.ts";

const UNARY_PAYLOADS = [64, 4096];
const ROUNDS = 5;
const ROUND_SECONDS = 0.5;
const CONCURRENCY = 32;
const STREAM_MESSAGE_SIZES = [2 ** 20, 2 ** 16];
const STREAM_ROUNDS = 3;
const STREAM_ROUND_SECONDS = 1;
const WARM_UP_SECONDS = 0.5;
const GOAL_RATIO = 2.0;
const GOAL_STREAM_BYTES_PER_S = 1e9;

type CpuUsage = NodeJS.CpuUsage;
type Measured = ReturnType<Sampler["result"]> & { concurrentCallsPerSec: number };

interface BenchResult {
  when: string;
  node: string;
  cpus: number;
  loadavg: number[];
  seconds: number;
  goals: { unaryRatioP50: number; streamBytesPerSec: number };
  unary: Array<{
    payloadBytes: number;
    frameBytes: number;
    raw: Measured;
    ttrpc: Measured;
    ratioP50: number;
    ratioCallsPerSec: number;
  }>;
  streaming: Array<{
    messageBytes: number;
    rawBytesPerSec: number;
    serverToClientBytesPerSec: number;
    clientToServerBytesPerSec: number;
  }>;
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

/** Bytes moved and the time it took, summed over rounds. */
class Rate {
  private bytes = 0;
  private ms = 0;

  add([bytes, ms]: [number, number]): void {
    this.bytes += bytes;
    this.ms += ms;
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

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "ttrpc-bench-"));
  const echoPath = path.join(dir, "echo.sock");
  const streamPath = path.join(dir, "stream.sock");
  const ttrpcPath = path.join(dir, "ttrpc.sock");
  const rawServer = await startChild(["--serve-raw", echoPath, streamPath]);
  const ttrpcServer = await startChild(["--serve-ttrpc", ttrpcPath]);
  const started = performance.now();
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

    const streaming: BenchResult["streaming"] = [];
    for (const messageBytes of STREAM_MESSAGE_SIZES) {
      // warm up both directions (JIT, heap and malloc growth) before timing
      await ttrpcDown(ttrpcPath, messageBytes, WARM_UP_SECONDS);
      await ttrpcUp(ttrpcPath, messageBytes, WARM_UP_SECONDS);
      const raw = new Rate();
      const down = new Rate();
      const up = new Rate();
      for (let r = 0; r < STREAM_ROUNDS; r++) {
        raw.add(await rawStream(streamPath, messageBytes, STREAM_ROUND_SECONDS));
        down.add(await ttrpcDown(ttrpcPath, messageBytes, STREAM_ROUND_SECONDS));
        up.add(await ttrpcUp(ttrpcPath, messageBytes, STREAM_ROUND_SECONDS));
      }
      streaming.push({
        messageBytes,
        rawBytesPerSec: raw.perSec(),
        serverToClientBytesPerSec: down.perSec(),
        clientToServerBytesPerSec: up.perSec(),
      });
    }

    const result: BenchResult = {
      when: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      loadavg: os.loadavg().map(round1),
      seconds: Math.round((performance.now() - started) / 1000),
      goals: { unaryRatioP50: GOAL_RATIO, streamBytesPerSec: GOAL_STREAM_BYTES_PER_S },
      unary,
      streaming,
    };
    printTables(result);
    const out = path.join(path.dirname(fileURLToPath(import.meta.url)), "results", "ttrpc.json");
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    updateBenchmarksMd("ttrpc", markdown(result));
    console.log(`\nwrote ${path.relative(process.cwd(), out)} and BENCHMARKS.md`);
  } finally {
    rawServer.kill();
    ttrpcServer.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

function printTables(r: BenchResult): void {
  console.log(`${r.cpus} CPUs, load average ${r.loadavg.join(" ")}, ${r.seconds} s\n`);
  console.log(`unary round trip on one connection (${ROUNDS} interleaved rounds of ${ROUND_SECONDS} s each)`);
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
  console.log("streaming throughput over unix (GB/s)");
  console.table(
    r.streaming.map((s) => {
      const worst = Math.min(s.serverToClientBytesPerSec, s.clientToServerBytesPerSec);
      return {
        message: `${s.messageBytes >> 10} KiB`,
        "raw stream (ceiling)": gbps(s.rawBytesPerSec),
        "ttrpc server->client": gbps(s.serverToClientBytesPerSec),
        "ttrpc client->server": gbps(s.clientToServerBytesPerSec),
        goal: `${worst >= GOAL_STREAM_BYTES_PER_S ? "ok" : "MISSED"} (>= ${GOAL_STREAM_BYTES_PER_S / 1e9})`,
      };
    }),
  );
}

function markdown(r: BenchResult): string {
  const verdict = (ok: boolean) => (ok ? "pass" : "MISS");
  return [
    "## ttrpc: unary round trips and streaming vs raw unix sockets",
    "",
    `Run ${r.when.slice(0, 16).replace("T", " ")} UTC, ${r.cpus} CPUs, node ${r.node}; load average ` +
      `${r.loadavg.join(" / ")} at the end; ${r.seconds} s. Client and servers (child processes) share the machine.`,
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
            : `${u.ratioP50} vs <= ${r.goals.unaryRatioP50}: ${verdict(u.ratioP50 <= r.goals.unaryRatioP50)}`,
        ]),
      ),
    ),
    "",
    `Streaming throughput over unix (GB/s), ${STREAM_ROUNDS} interleaved rounds of ${STREAM_ROUND_SECONDS} s:`,
    "",
    mdTable(
      ["message", "raw stream (ceiling)", "ttrpc server->client", "ttrpc client->server", "slower direction vs goal"],
      r.streaming.map((s) => {
        const worst = Math.min(s.serverToClientBytesPerSec, s.clientToServerBytesPerSec);
        return [
          `${s.messageBytes >> 10} KiB`,
          gbps(s.rawBytesPerSec),
          gbps(s.serverToClientBytesPerSec),
          gbps(s.clientToServerBytesPerSec),
          `${gbps(worst)} vs >= ${r.goals.streamBytesPerSec / 1e9}: ${verdict(worst >= r.goals.streamBytesPerSec)}`,
        ];
      }),
    ),
  ].join("\n");
}

const role = process.argv[2];
if (role === "--serve-raw") serveRaw(process.argv[3]!, process.argv[4]!);
else if (role === "--serve-ttrpc") serveTtrpc(process.argv[3]!);
else await main();
