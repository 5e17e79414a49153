import assert from "node:assert/strict";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { TaskExitSchema, TaskOOMSchema } from "../../../runtime/protos/gen/containerd/events/task_pb.ts";
import { containerIdOf } from "../../../runtime/sandboxer/events.ts";

test("containerIdOf reads field 1 of a task event whatever comes before it", () => {
  const exit = toBinary(TaskExitSchema, create(TaskExitSchema, { pid: 7, exitStatus: 1, containerId: "abc", id: "x" }));
  assert.equal(containerIdOf(exit), "abc");
  assert.equal(containerIdOf(toBinary(TaskOOMSchema, create(TaskOOMSchema, { containerId: "d" }))), "d");
  assert.equal(containerIdOf(new Uint8Array()), undefined);
  assert.equal(containerIdOf(new Uint8Array([0x0a, 0x05, 0x61])), undefined, "truncated: no id, no throw");
});
