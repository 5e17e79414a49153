import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import type { ContainerManager } from "../../../runtime/agent/containers.ts";
import { EventQueue } from "../../../runtime/agent/event-queue.ts";
import { queueTaskEvents } from "../../../runtime/agent/task-events.ts";
import { TaskExitSchema, TaskStartSchema } from "../../../runtime/protos/gen/containerd/events/task_pb.ts";

test("manager start, exec start, exit and OOM become containerd task events, in order", async () => {
  const manager = new EventEmitter();
  const queue = new EventQueue();
  queueTaskEvents(manager as unknown as ContainerManager, queue);
  const exitedAt = new Date("2026-01-02T03:04:05.006Z");
  manager.emit("start", { containerId: "c", execId: "", pid: 10 });
  manager.emit("start", { containerId: "c", execId: "e1", pid: 11 });
  manager.emit("exit", { containerId: "c", execId: "e1", pid: 11, exitStatus: 3, exitedAt });
  manager.emit("oom", { containerId: "c" });
  const signal = new AbortController().signal;
  const got = [];
  for (let i = 0; i < 4; i++) got.push(await queue.next(signal));
  assert.deepEqual(
    got.map((e) => [e.namespace, e.topic, e.event?.typeUrl]),
    [
      ["k8s.io", "/tasks/start", "containerd.events.TaskStart"],
      ["k8s.io", "/tasks/exec-started", "containerd.events.TaskExecStarted"],
      ["k8s.io", "/tasks/exit", "containerd.events.TaskExit"],
      ["k8s.io", "/tasks/oom", "containerd.events.TaskOOM"],
    ],
  );
  assert.equal(fromBinary(TaskStartSchema, got[0]!.event!.value).pid, 10);
  const exit = fromBinary(TaskExitSchema, got[2]!.event!.value);
  assert.equal(exit.id, "e1", "an exec's exit carries the exec id");
  assert.equal(exit.exitStatus, 3);
  assert.equal(exit.exitedAt?.seconds, BigInt((exitedAt.getTime() / 1000) | 0));
  assert.ok(
    got.every((e) => e.timestamp && e.timestamp.seconds > 0n),
    "every envelope is stamped",
  );
});
