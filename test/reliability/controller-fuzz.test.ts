import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { create, type DescMethod, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { validateId } from "../../runtime/contract/ids.ts";
import { unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { cleanupDaemonDir, type Daemon, requireArtifacts, startDaemon, writeConfig } from "../../testkit/daemon.ts";
import {
  type ControllerClient,
  FakeLauncher,
  fakeDaemon,
  footprint,
  settledFds,
  statusVersusDisk,
} from "../../testkit/fake-daemon.ts";
import { fuzzSeed, rng, subSeed, withSeed } from "../../testkit/rng.ts";

// Random and mutated Controller requests over the real gRPC socket: the bulk against a SandboxManager on a fake
// launcher (>= 100k), a smaller set against the real daemon. No crash, every error is a clear one of the codes a
// bad request deserves, Status agrees with sandbox.json after, nothing is left behind.
const SEED = fuzzSeed("controller fuzz");
/** Wait on a valid id blocks until that sandbox exits, so its caller's deadline ending it is a correct answer. */
const WAIT_DEADLINE_MS = 50;
/** Every other request waits on nothing but the daemon: no answer within this long is a hang. */
const ANSWER_DEADLINE_MS = 60_000;
const VALID_IDS = ["f0", "f1", "f2", "f3", "f4", "f5"];
const BAD_IDS = [
  "",
  ".",
  "..",
  "../etc",
  "../../../../tmp/x",
  "a/b",
  "/abs",
  "f0/../f1",
  "-dash",
  ".hidden",
  "a..b",
  "x".repeat(129),
  "y".repeat(64 * 1024),
  "tab\there",
  "nul\0byte",
  "new\nline",
  "é",
  "日本語",
  "pod-🚀",
  "\u202eevil",
  "%2e%2e",
];
const METHODS = Controller.methods.map((m) => m.localName);
const PATHS = Controller.methods.map((m) => `/${Controller.typeName}/${m.name}`);

function generator(random: () => number) {
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const podConfig = () =>
    toBinary(
      PodSandboxConfigSchema,
      create(PodSandboxConfigSchema, {
        hostname: pick(["h", "", "x".repeat(300), "ünï"]),
        linux: { cgroupParent: pick(["", "", "/kubepods/pod1", "../x", "/a/../../b", "kubepods-besteffort.slice"]) },
        dnsConfig: { servers: pick([[], ["8.8.8.8"], ["not an ip\n"]]) },
      }),
    );
  const mutate = (b: Uint8Array) => {
    const out = Buffer.from(b);
    for (let i = int(4); i >= 0 && out.length; i--) out[int(out.length)] = int(256);
    return random() < 0.3 ? out.subarray(0, int(out.length + 1)) : out;
  };
  const options = () => {
    const r = random();
    if (r < 0.4) return undefined;
    const typeUrl = pick(["runtime.v1.PodSandboxConfig", "type.googleapis.com/runtime.v1.PodSandboxConfig", "x.Y", ""]);
    if (r < 0.7) return { typeUrl, value: podConfig() };
    if (r < 0.85) return { typeUrl, value: mutate(podConfig()) };
    return { typeUrl, value: bytes(int(64)) };
  };
  const json = () =>
    Buffer.from(
      pick([
        '{"memory":{"limit":1073741824}}',
        '{"cpu":{"shares":"many"}}',
        '{"linux":{"resources":{"cpu":{"quota":1e400}}}}',
        "[]",
        "null",
        "{",
        bytes(8).toString("latin1"),
      ]),
    );
  const id = () => (random() < 0.75 ? pick(VALID_IDS) : pick(BAD_IDS));
  /** A structured request for method m. */
  const request = (m: string): Record<string, unknown> => {
    const sandboxId = id();
    switch (m) {
      case "create":
        return {
          sandboxId,
          options: options(),
          netnsPath: pick(["", "", "/var/run/netns/none", "../../etc/passwd"]),
          annotations: random() < 0.2 ? { [pick(["a", "", "é"])]: "v".repeat(int(100)) } : {},
        };
      case "stop":
        return { sandboxId, timeoutSecs: pick([0, 1, 2 ** 32 - 1]) };
      case "update":
        return {
          sandboxId,
          sandbox: {
            spec: { typeUrl: "x", value: json() },
            extensions: { resources: { typeUrl: "r", value: json() } },
          },
          fields: pick([[], ["spec"], ["extensions"], ["spec", "extensions", "labels"]]),
        };
      case "status":
        return { sandboxId, verbose: random() < 0.5 };
      default:
        return { sandboxId };
    }
  };
  /** Raw bytes for a random method path: a valid request mutated, or noise; with the id the daemon decodes from it. */
  const raw = (): { path: string; method: string; body: Buffer; sandboxId: string | undefined } => {
    const i = int(METHODS.length);
    const m = Controller.methods[i]!;
    const valid = toBinary(m.input, create(m.input, request(m.localName) as never));
    const body = random() < 0.8 ? mutate(valid) : bytes(int(200));
    return { path: PATHS[i]!, method: m.localName, body, sandboxId: decodedId(m, body) };
  };
  return { int, pick, request, raw };
}

/** The sandbox id the daemon reads from a raw body; undefined when the body does not decode. */
function decodedId(m: DescMethod, body: Uint8Array): string | undefined {
  try {
    return (fromBinary(m.input, body) as unknown as { sandboxId: string }).sandboxId;
  } catch {
    return undefined;
  }
}

/**
 * Codes a bad or conflicting request may get; anything else (UNKNOWN, UNAVAILABLE, a crash) fails the test. Not
 * DEADLINE_EXCEEDED or CANCELLED: nothing here cancels, and only a Wait on a valid id may outlive its deadline.
 */
const EXPECTED = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.ALREADY_EXISTS,
  grpc.status.FAILED_PRECONDITION,
]);

interface FuzzResult {
  ok: number;
  codes: Map<string, number>;
}

/**
 * Sends total requests, `inflight` at a time, a fifth of them as raw mutated bytes. allowInternal: the codes
 * INTERNAL may carry for a structured request (the real daemon's Start fails on its missing kernel).
 */
async function fuzz(
  target: string,
  client: ControllerClient,
  total: number,
  inflight: number,
  seed: number,
  allowInternal: RegExp,
): Promise<FuzzResult> {
  const raw = new grpc.Client(target, grpc.credentials.createInsecure());
  const result: FuzzResult = { ok: 0, codes: new Map() };
  const failures: string[] = [];
  const one = async (n: number): Promise<void> => {
    // Request n draws from its own stream: the seed replays it whatever order the answers came in.
    const random = rng(subSeed(seed, n));
    const g = generator(random);
    const isRaw = random() < 0.2;
    const m = g.pick(METHODS);
    const req = isRaw ? g.raw() : g.request(m);
    const sandboxId = req.sandboxId as string | undefined;
    const validId = sandboxId !== undefined && validateId("sandbox", sandboxId) === undefined;
    const badId = sandboxId !== undefined && !validId;
    const what = "path" in req ? `raw ${req.path}` : m;
    const blocks = ("path" in req ? req.method : m) === "wait" && validId;
    const deadlineMs = blocks ? WAIT_DEADLINE_MS : ANSWER_DEADLINE_MS;
    const err = await new Promise<grpc.ServiceError | undefined>((resolve) => {
      if ("path" in req) {
        raw.makeUnaryRequest(
          req.path as string,
          (b: Buffer) => b,
          (b: Buffer) => b,
          req.body as Buffer,
          new grpc.Metadata(),
          { deadline: Date.now() + deadlineMs },
          (e) => resolve(e ?? undefined),
        );
      } else {
        (client[m as keyof ControllerClient] as (r: unknown, o: unknown) => Promise<unknown>)(req, { deadlineMs }).then(
          () => resolve(undefined),
          resolve,
        );
      }
    });
    if (!err) {
      result.ok++;
      if (badId) failures.push(`#${n} ${what} with sandbox id ${JSON.stringify(sandboxId).slice(0, 80)} succeeded`);
      return;
    }
    const name = grpc.status[err.code] ?? String(err.code);
    result.codes.set(name, (result.codes.get(name) ?? 0) + 1);
    const described = `#${n} ${what}: ${name}: ${err.details.slice(0, 300)}`;
    // A raw body that does not decode is refused by grpc-js itself (INTERNAL, "deserializing").
    const rawDecode =
      "path" in req && sandboxId === undefined && err.code === grpc.status.INTERNAL && /deserializ/i.test(err.details);
    const internalOk = err.code === grpc.status.INTERNAL && allowInternal.test(err.details);
    if (blocks && err.code === grpc.status.DEADLINE_EXCEEDED) return;
    if (err.code === grpc.status.DEADLINE_EXCEEDED) {
      failures.push(`${described} (it waits on nothing, yet had no answer within ${ANSWER_DEADLINE_MS / 1000} s)`);
    } else if (!EXPECTED.has(err.code) && !rawDecode && !internalOk) {
      failures.push(described);
    } else if (err.details.trim() === "") {
      failures.push(`${described} (empty message)`);
    } else if (badId && (err.code !== grpc.status.INVALID_ARGUMENT || !/sandbox id/.test(err.details))) {
      failures.push(`${described} (a bad id must be refused as such)`);
    } else if (err.details.length > 2000) {
      failures.push(`${described.slice(0, 200)}… (a ${err.details.length}-character message)`);
    }
  };
  let next = 0;
  const worker = async () => {
    while (next < total) await one(next++);
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  raw.close();
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} unexpected answers`);
  return result;
}

test(
  "100k fuzzed Controller requests over gRPC (fake VMs): clear errors, consistent state, no leaks",
  { timeout: 600_000 },
  () => withSeed(SEED, fakeVms),
);

async function fakeVms(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "rel-fuzz-"));
  const launcher = new FakeLauncher(rng(subSeed(SEED, 0)), 1);
  const d = await fakeDaemon(dir, launcher);
  try {
    const t0 = Date.now();
    const r = await fuzz(`unix://${d.sock}`, d.client, 100_000, 64, subSeed(SEED, 1), /^$/);
    const secs = (Date.now() - t0) / 1000;
    console.log(
      `controller fuzz: 100000 requests in ${secs.toFixed(1)} s, ${r.ok} ok, ${JSON.stringify(Object.fromEntries(r.codes))}`,
    );
    assert.ok(r.ok > 1000, `only ${r.ok} requests succeeded: the fuzzer no longer reaches the state machine`);
    const state = path.join(dir, "state");
    // Mutated raw requests create other valid ids too.
    const left = await readdir(state);
    assert.deepEqual(
      left.filter((n) => validateId("sandbox", n) !== undefined),
      [],
      "only valid ids became directories",
    );
    assert.deepEqual(await statusVersusDisk(d.client, state, new Set([...VALID_IDS, ...left])), []);
    const running = d.manager.list().filter((s) => s.state === "running").length;
    assert.equal(launcher.vms.size, running, "one fake VM per running sandbox");
    for (const id of d.manager.list().map((s) => s.id)) await d.client.shutdown({ sandboxId: id });
    assert.equal(launcher.vms.size, 0);
    assert.equal(launcher.started, launcher.released, "every VM started was released");
    assert.deepEqual(await readdir(state), []);
  } finally {
    d.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test(
  "fuzzed Controller requests against the real daemon: it stays up, clear errors, nothing leaks",
  { timeout: 300_000 },
  () => withSeed(SEED, realDaemon),
);

async function realDaemon(): Promise<void> {
  requireArtifacts();
  const dir = await mkdtemp(path.join(os.tmpdir(), "rel-fuzz-daemon-"));
  let daemon: Daemon | undefined;
  try {
    const config = path.join(dir, "config.toml");
    await writeConfig(config);
    // Start must fail fast (no VM boots): the kernel is gone after the config was accepted.
    writeFileSync(
      config,
      readFileSync(config, "utf8").replace(/kernel_path = "[^"]*"/, `kernel_path = "${dir}/vmlinux.bin"`),
    );
    daemon = await startDaemon(dir, config);
    const { client, close } = unaryClient(Controller, `unix://${daemon.sock}`);
    try {
      await client.platform({ sandboxId: "" }).catch(() => undefined);
      // A first (failing) Start makes what the daemon keeps for its lifetime once used, such as libuv's one inotify
      // fd (the guest console follower watches the sandbox directory): the footprint is counted after it.
      await client.create({ sandboxId: "warm-up" });
      await client.start({ sandboxId: "warm-up" }).catch(() => undefined);
      await client.shutdown({ sandboxId: "warm-up" });
      const state = path.join(dir, "state");
      const before = footprint(daemon.proc.pid!, state);
      const t0 = Date.now();
      const r = await fuzz(
        `unix://${daemon.sock}`,
        client,
        5000,
        16,
        subSeed(SEED, 2),
        /vmlinux\.bin|in netns |cannot create its pod/,
      );
      console.log(
        `real daemon fuzz: 5000 requests in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${r.ok} ok, ${JSON.stringify(Object.fromEntries(r.codes))}`,
      );
      assert.equal(daemon.proc.exitCode, null, "the daemon is still running");
      const left = await readdir(state);
      assert.deepEqual(await statusVersusDisk(client, state, new Set([...VALID_IDS, ...left])), []);
      for (const id of left) await client.shutdown({ sandboxId: id });
      assert.deepEqual(await readdir(state), []);
      await settledFds(daemon.proc.pid!, before.fds);
      assert.deepEqual(footprint(daemon.proc.pid!, state), before);
    } finally {
      close();
    }
  } finally {
    await cleanupDaemonDir(daemon, dir);
  }
}
