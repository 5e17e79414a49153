import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { EventQueue } from "../../../runtime/agent/event-queue.ts";
import { type PodConfig, sandboxService } from "../../../runtime/agent/services/sandbox-service.ts";
import { EnvelopeSchema } from "../../../runtime/protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import { SandboxService } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { connectAgent, measureClockDelta } from "../../../runtime/sandboxer/agent.ts";
import { TtrpcServer } from "../../../runtime/ttrpc/index.ts";

let dir: string;
const events = new EventQueue();
const pods: PodConfig[] = [];
const server = new TtrpcServer().register(
  SandboxService,
  sandboxService({
    events,
    debug: true,
    setupPod: async (c) => {
      pods.push(c);
    },
  }),
);

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "agent-"));
});
after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

const dialer = (sock: string) => () =>
  new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(sock);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });

test("connectAgent retries until the guest listens, then the SandboxService answers", async () => {
  const sock = path.join(dir, "late.sock");
  const l = net.createServer();
  setTimeout(() => {
    server.serve(l);
    l.listen(sock);
  }, 300);
  const client = await connectAgent(dialer(sock), { deadlineMs: 5000, retryMs: 50 });
  const svc = client.service(SandboxService);
  await svc.setupSandbox({
    config: { typeUrl: "PodSandboxConfig", value: Buffer.from(JSON.stringify({ hostname: "web-1" })) },
  });
  assert.deepEqual(pods, [{ hostname: "web-1" }]);
  await assert.rejects(
    svc.setupSandbox({ config: { typeUrl: "PodSandboxConfig", value: Buffer.from("{nope") } }),
    /SetupSandbox config is not JSON/,
  );
  const out = await svc.execVMProcess({ command: "cat; echo done", stdin: Buffer.from("in\n") });
  assert.equal(out.out, "in\ndone\n");
  const sent = Date.now();
  const delta = await measureClockDelta(client);
  const roundTripNs = BigInt(Date.now() - sent) * 1_000_000n;
  // One clock on both ends: the estimate is off by at most half the round trip, however long that took.
  assert.ok(2n * delta <= roundTripNs && -2n * delta <= roundTripNs, `delta ${delta} ns, round trip ${roundTripNs} ns`);
  const next = svc.getEvents({});
  events.push(create(EnvelopeSchema, { topic: "/tasks/oom", namespace: "k8s.io" }));
  assert.equal((await next).topic, "/tasks/oom");
  client.close();
});

test("connectAgent gives up at its deadline with the last error", async () => {
  await assert.rejects(
    connectAgent(dialer(path.join(dir, "never.sock")), { deadlineMs: 300, retryMs: 50 }),
    /did not answer on vsock port 1024 within 0.3 s \(last error: .*ENOENT/,
  );
  await assert.rejects(
    connectAgent(dialer(path.join(dir, "never.sock")), { deadlineMs: 5000, alive: () => false }),
    /the VM exited before the agent answered/,
  );
});
