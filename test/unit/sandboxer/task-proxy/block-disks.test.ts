import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, beforeEach, test } from "node:test";
import type { MessageShape } from "@bufbuild/protobuf";
import { parseDiskMounts } from "../../../../runtime/contract/block.ts";
import { logger } from "../../../../runtime/log/log.ts";
import {
  type CreateTaskRequestSchema,
  Task,
} from "../../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { EventPublisher } from "../../../../runtime/sandboxer/events.ts";
import type { DiskHost } from "../../../../runtime/sandboxer/storage/block.ts";
import { mountShare, shareLayout, unmountAllUnder } from "../../../../runtime/sandboxer/storage/share.ts";
import { TaskProxy } from "../../../../runtime/sandboxer/task-proxy/proxy.ts";
import { ContainerRecords } from "../../../../runtime/sandboxer/task-proxy/records.ts";
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from "../../../../runtime/ttrpc/index.ts";

// The proxy between containerd and a stand-in guest, with a stand-in VM that records hot-plugs: a blockfile rootfs is
// handed over as a disk and taken back after the guest's delete, whatever the guest answers.

let dir: string;
let image: string;
let guestCreates: Array<MessageShape<typeof CreateTaskRequestSchema>>;
/** What the stand-in guest answers to Delete. */
let guestDelete: () => Promise<{ pid: number }>;
/** The VM's log of hot-plug calls, and what a removal answers. */
let vmCalls: string[];
let removal: (id: string) => Promise<"removed" | "cut-off">;
let events: EventPublisher;
let records: ContainerRecords;
const closers: Array<() => unknown> = [];

const vm: DiskHost = {
  async hotplugDisk(disk) {
    vmCalls.push(`plug ${disk.id} ${disk.path}`);
    return { id: disk.id, serial: disk.id };
  },
  async removeDevice(id, opts) {
    vmCalls.push(`remove ${id} within ${opts?.timeoutMs}`);
    return removal(id);
  },
};

async function serveOn(sock: string, server: TtrpcServer): Promise<TtrpcClient> {
  const l = net.createServer();
  server.serve(l);
  await new Promise<void>((r) => l.listen(sock, r));
  const s = net.connect(sock);
  await new Promise((r) => s.once("connect", r));
  closers.push(
    () => l.close(),
    () => s.destroy(),
  );
  return new TtrpcClient(s);
}

const taskOf = (c: TtrpcClient) => c.service(Task);

async function proxyWith(name: string): Promise<{ proxy: TaskProxy; task: ReturnType<typeof taskOf> }> {
  const guest = new TtrpcServer().register(Task, {
    create: async (req) => {
      guestCreates.push(req);
      return { pid: 7 };
    },
    delete: () => guestDelete(),
    kill: async () => ({}),
    wait: async () => ({ exitStatus: 0 }),
  });
  const agent = await serveOn(path.join(dir, `${name}-agent.sock`), guest);
  const share = shareLayout(path.join(dir, "sb"));
  let n = 0;
  const proxy = new TaskProxy({
    sandboxId: "sb",
    taskAddress: "ttrpc+unix:///dev/null",
    records,
    share,
    agent: () => agent,
    events,
    nextStorage: () => n++,
    disks: vm,
    diskTimeoutMs: 321,
    log: logger("test"),
  });
  const containerd = await serveOn(
    path.join(dir, `${name}-task.sock`),
    new TtrpcServer().register(Task, proxy.handlers()),
  );
  return { proxy, task: taskOf(containerd) };
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "proxy-disks-"));
  image = path.join(dir, "snapshot.img");
  execFileSync("truncate", ["-s", "4M", image]);
  await mountShare(shareLayout(path.join(dir, "sb")));
  await mkdir(path.join(dir, "bundle"));
  await writeFile(path.join(dir, "bundle/config.json"), JSON.stringify({ root: { path: "rootfs" }, mounts: [] }));
  events = new EventPublisher(path.join(dir, "no-containerd.sock"), logger("test"));
  records = new ContainerRecords(path.join(dir, "containers"), shareLayout(path.join(dir, "sb")), logger("test"));
});

beforeEach(() => {
  guestCreates = [];
  vmCalls = [];
  guestDelete = async () => ({ pid: 7 });
  removal = async () => "removed";
});

after(async () => {
  for (const close of closers) close();
  events.close();
  await unmountAllUnder(dir);
  await rm(dir, { recursive: true, force: true });
});

const createBlock = (task: Awaited<ReturnType<typeof proxyWith>>["task"], id: string) =>
  task.create(
    { id, bundle: path.join(dir, "bundle"), rootfs: [{ type: "ext4", source: image, options: ["loop", "rw"] }] },
    { metadata: { "containerd-namespace-ttrpc": "k8s.io" } },
  );

test("a blockfile rootfs goes to the guest as a disk entry; delete unplugs it after the guest's delete", async () => {
  const { task } = await proxyWith("a");
  await createBlock(task, "c1");
  const [plug] = vmCalls;
  const serial = plug?.split(" ")[1] ?? "";
  assert.equal(plug, `plug ${serial} ${image}`);
  const sent = guestCreates[0];
  assert.deepEqual(parseDiskMounts(sent?.rootfs ?? []), [{ kind: "rootfs", serial, fsType: "ext4", options: ["rw"] }]);
  assert.deepEqual(
    (await records.list()).map((r) => r.rec.bundle.disks?.map((d) => d.serial)),
    [[serial]],
  );
  const order: string[] = [];
  guestDelete = async () => {
    order.push("guest delete");
    return { pid: 7 };
  };
  removal = async () => {
    order.push("unplug");
    return "removed";
  };
  await task.delete({ id: "c1" });
  assert.deepEqual(order, ["guest delete", "unplug"], "the guest unmounts first, then the VM lets go");
  assert.equal(vmCalls[1], `remove ${serial} within 321`);
  assert.deepEqual(await records.list(), []);
});

// Attack: a guest that claims not to know the container (or lost it) must not keep the host's disk attached.
test("a guest that answers NotFound to delete still has the disk taken away", async () => {
  const { task } = await proxyWith("b");
  await createBlock(task, "c2");
  guestDelete = async () => {
    throw new TtrpcError(Code.NotFound, "container c2 not found");
  };
  await task.delete({ id: "c2" });
  assert.match(vmCalls[1] ?? "", /^remove kd\S+ within 321$/);
  assert.deepEqual(await records.list(), []);
  await assert.rejects(task.state({ id: "c2" }), (e: TtrpcError) => e.code === Code.NotFound);
});

// Attack: a guest that never releases the disk cannot hold the delete (or the host file) past the bound.
test("a disk the guest keeps is cut off and the delete completes; other guest errors keep the container", async () => {
  const { task } = await proxyWith("c");
  await createBlock(task, "c3");
  guestDelete = async () => {
    throw new TtrpcError(Code.FailedPrecondition, "container c3 is still running");
  };
  await assert.rejects(task.delete({ id: "c3" }), (e: TtrpcError) => e.code === Code.FailedPrecondition);
  assert.equal(vmCalls.length, 1, "nothing unplugged while the guest says the container runs");
  guestDelete = async () => ({ pid: 7 });
  removal = async () => "cut-off";
  await task.delete({ id: "c3" });
  assert.equal(vmCalls.length, 2);
  assert.deepEqual(await records.list(), []);
});

test("a failed create takes its disk back out; a restarted daemon removes recorded disks of orphans", async () => {
  const { task } = await proxyWith("d");
  await assert.rejects(
    task.create({
      id: "c4",
      bundle: path.join(dir, "bundle"),
      rootfs: [{ type: "ext4", source: image, options: ["loop", "rw,dev"] }],
    }),
    (e: TtrpcError) => e.code === Code.InvalidArgument && /mount option 'rw,dev' is not allowed/.test(e.message),
  );
  assert.equal(vmCalls.length, 0, "refused before anything was plugged");

  await createBlock(task, "c5");
  const serial = vmCalls[0]?.split(" ")[1];
  // A new daemon: the same records, a fresh proxy.
  const { proxy } = await proxyWith("e");
  assert.deepEqual(await proxy.reapOrphans(), ["c5"]);
  assert.equal(vmCalls[1], `remove ${serial} within 321`);
  assert.deepEqual(await readdir(path.join(dir, "containers")), []);
});
