import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { after, before, test } from "node:test";
import type { MessageShape } from "@bufbuild/protobuf";
import { logger } from "../../../../runtime/log/log.ts";
import {
  type CreateTaskRequestSchema,
  Task,
} from "../../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Streaming } from "../../../../runtime/protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { Status } from "../../../../runtime/protos/gen/containerd/types/task/task_pb.ts";
import { EventPublisher } from "../../../../runtime/sandboxer/events.ts";
import { mountShare, shareLayout, unmountAllUnder } from "../../../../runtime/sandboxer/storage/share.ts";
import { TaskProxy } from "../../../../runtime/sandboxer/task-proxy/proxy.ts";
import { ContainerRecords } from "../../../../runtime/sandboxer/task-proxy/records.ts";
import {
  type AnyChannel,
  ackMessage,
  readInit,
  receiveStream,
  sendStream,
} from "../../../../runtime/streaming/stdio-stream.ts";
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from "../../../../runtime/ttrpc/index.ts";

// A stand-in guest: records what the proxy sends, echoes stdin to stdout through Streaming.
const guestCalls: Array<MessageShape<typeof CreateTaskRequestSchema>> = [];
const guestStdout = new PassThrough();
const guestStdin = new PassThrough();
let dir: string;
let guest: TtrpcServer;
let agent: TtrpcClient;
let proxyServer: TtrpcServer;
let containerd: TtrpcClient;
let proxy: TaskProxy;
let events: EventPublisher;
let records: ContainerRecords;
/** Container "mid" is mid-delete in the guest while this is pending: it is gone from state, delete has not answered. */
let releaseDelete: (exitStatus: number) => void = () => {};
const guestDeleting = new Set<string>();

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "task-proxy-"));
  guest = new TtrpcServer()
    .register(Task, {
      create: async (req) => {
        guestCalls.push(req);
        return { pid: 7 };
      },
      start: async () => ({ pid: 7 }),
      state: async (req) => {
        if (guestDeleting.has(req.id)) throw new TtrpcError(Code.NotFound, `container ${req.id} not found`);
        return { id: req.id, pid: 7, bundle: "/run/kuasar/state/c1", stdout: "stream:c1/init/stdout" };
      },
      wait: () => new Promise(() => {}),
      delete: async (req) => {
        if (req.id !== "mid") return { pid: 7, exitStatus: 0 };
        guestDeleting.add(req.id);
        const exitStatus = await new Promise<number>((r) => {
          releaseDelete = r;
        });
        return { pid: 7, exitStatus };
      },
      kill: async (req) => {
        if (req.signal === 99) throw new TtrpcError(Code.InvalidArgument, "bad signal 99");
        return {};
      },
    })
    .register(Streaming, {
      stream: async (requests, out) => {
        const ch: AnyChannel = { send: (m) => out.send(m), messages: requests[Symbol.asyncIterator](), end: () => {} };
        const id = await readInit(ch);
        await out.send(ackMessage());
        if (id === "c1/init/stdout") await sendStream(ch, guestStdout, id);
        else if (id === "c1/init/stdin") await receiveStream(ch, guestStdin, id);
      },
    });
  const [a, b] = await socketPair(path.join(dir, "agent.sock"), guest);
  agent = new TtrpcClient(a);
  void b;
  let n = 0;
  // No containerd here: events queue and retry, and must never block a task call.
  events = new EventPublisher(path.join(dir, "no-containerd.sock"), logger("test"));
  const share = shareLayout(dir);
  await mountShare(share);
  records = new ContainerRecords(path.join(dir, "containers"), share, logger("test"));
  proxy = new TaskProxy({
    sandboxId: "sb",
    taskAddress: `ttrpc+unix://${path.join(dir, "task.sock")}`,
    records,
    share,
    agent: () => agent,
    events,
    nextStorage: () => n++,
    log: logger("test"),
  });
  proxyServer = new TtrpcServer().register(Task, proxy.handlers());
  const [c] = await socketPair(path.join(dir, "task.sock"), proxyServer);
  containerd = new TtrpcClient(c);
  await mkdir(path.join(dir, "bundle/rootfs"), { recursive: true });
  await writeFile(path.join(dir, "bundle/config.json"), JSON.stringify({ root: { path: "rootfs" }, mounts: [] }));
  for (const f of ["stdin", "stdout"]) execFileSync("mkfifo", [path.join(dir, f)]);
});

after(async () => {
  events.close();
  containerd.close();
  agent.close();
  await proxyServer.close();
  await guest.close();
  await unmountAllUnder(dir);
  await rm(dir, { recursive: true, force: true });
});

async function socketPair(sock: string, server: TtrpcServer): Promise<[net.Socket, net.Server]> {
  const l = net.createServer();
  server.serve(l);
  await new Promise<void>((r) => l.listen(sock, r));
  const s = net.connect(sock);
  await new Promise((r) => s.once("connect", r));
  return [s, l];
}

test("create translates host paths to the guest and relays stdio both ways", async () => {
  const task = containerd.service(Task);
  const stdoutReader = createReadStream(path.join(dir, "stdout"));
  const r = await task.create(
    {
      id: "c1",
      bundle: path.join(dir, "bundle"),
      stdin: path.join(dir, "stdin"),
      stdout: path.join(dir, "stdout"),
    },
    { metadata: { "containerd-namespace-ttrpc": "k8s.io" } },
  );
  assert.equal(r.pid, 7);
  const sent = guestCalls[0]!;
  assert.equal(sent.bundle, "/run/kuasar/state/c1");
  assert.deepEqual(sent.rootfs, []);
  assert.equal(sent.stdout, "stream:c1/init/stdout");
  assert.equal(sent.stdin, "stream:c1/init/stdin");
  assert.equal(sent.stderr, "");
  const guestSpec = JSON.parse(await readFile(path.join(dir, "shared/c1/config.json"), "utf8"));
  assert.equal(guestSpec.root.path, "/run/kuasar/state/storage0");

  // guest stdout -> host FIFO
  const got = new Promise<string>((resolve) => stdoutReader.once("data", (d) => resolve(d.toString())));
  guestStdout.write("hello from the guest\n");
  assert.equal(await got, "hello from the guest\n");
  // host FIFO -> guest stdin
  const fromHost = new Promise<string>((resolve) => guestStdin.once("data", (d) => resolve(d.toString())));
  const w = await open(path.join(dir, "stdin"), "w");
  await w.write("typed on the host\n");
  assert.equal(await fromHost, "typed on the host\n");
  await w.close();

  // containerd is told its own paths back
  const st = await task.state({ id: "c1" });
  assert.equal(st.bundle, path.join(dir, "bundle"));
  assert.equal(st.stdout, path.join(dir, "stdout"));
  stdoutReader.destroy();
});

test("guest errors keep their codes; unknown containers are NotFound; delete releases the share", async () => {
  const task = containerd.service(Task);
  await assert.rejects(task.kill({ id: "c1", signal: 99 }), (e: TtrpcError) => e.code === Code.InvalidArgument);
  await assert.rejects(task.kill({ id: "nope", signal: 9 }), (e: TtrpcError) => e.code === Code.NotFound);
  await assert.rejects(task.create({ id: "../x", bundle: dir }), (e: TtrpcError) => e.code === Code.InvalidArgument);
  await assert.rejects(
    task.create({ id: "c2", bundle: path.join(dir, "missing") }),
    (e: TtrpcError) => e.code === Code.FailedPrecondition && /cannot read OCI spec/.test(e.message),
  );
  const c = await task.connect({ id: "c1" });
  assert.equal(c.taskPid, 7);
  await task.delete({ id: "c1" });
  assert.deepEqual(await readdir(path.join(dir, "shared")), []);
  await assert.rejects(task.state({ id: "c1" }), (e: TtrpcError) => e.code === Code.NotFound);
});

test("while containerd's Delete is in flight the task reads as stopped, not missing, even once the guest forgot it", async () => {
  const task = containerd.service(Task);
  await task.create({ id: "mid", bundle: path.join(dir, "bundle") });
  // The host's own part of the delete (its storage released) is held open too.
  const release = records.release.bind(records);
  let releaseHost: () => void = () => {};
  const hostHeld = new Promise<void>((r) => {
    releaseHost = r;
  });
  let hostReleasing = false;
  records.release = async (...args) => {
    hostReleasing = true;
    await hostHeld;
    return release(...args);
  };
  try {
    const deleting = task.delete({ id: "mid" });
    while (!guestDeleting.has("mid")) await new Promise((r) => setTimeout(r, 5));
    const whileGuestDeletes = task.state({ id: "mid" });
    await new Promise((r) => setTimeout(r, 50));
    releaseDelete(3);
    for (const st of [
      await whileGuestDeletes,
      await (async () => {
        while (!hostReleasing) await new Promise((r) => setTimeout(r, 5));
        return task.state({ id: "mid" });
      })(),
    ]) {
      assert.equal(st.status, Status.STOPPED);
      assert.equal(st.exitStatus, 3);
      assert.equal(st.bundle, path.join(dir, "bundle"));
    }
    releaseHost();
    assert.equal((await deleting).exitStatus, 3);
  } finally {
    records.release = release;
  }
  await assert.rejects(task.state({ id: "mid" }), (e: TtrpcError) => e.code === Code.NotFound);
});
