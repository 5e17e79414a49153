import assert from "node:assert/strict";
import { test } from "node:test";
import { type Container, ContainerRegistry, processOf, statusOf } from "../../../runtime/agent/container-registry.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { Proc } from "../../../runtime/agent/process.ts";

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof TaskError, `not a TaskError: ${e}`);
    return e.code;
  }
  return "no error";
};

function container(id: string): Container {
  return {
    id,
    bundle: `/b/${id}`,
    dir: `/s/${id}`,
    init: new Proc(id, "", {}),
    execs: new Map(),
    paused: false,
    deleted: false,
  };
}

test("reserve refuses an id that is no file name, and a second create of an id being created or held", () => {
  const r = new ContainerRegistry();
  for (const id of ["../etc", "a/b", "", ".."])
    assert.equal(
      code(() => r.reserve(id)),
      "InvalidArgument",
      id,
    );
  r.reserve("c1");
  assert.equal(
    code(() => r.reserve("c1")),
    "AlreadyExists",
    "while its create runs",
  );
  r.add(container("c1"));
  r.release("c1");
  assert.equal(
    code(() => r.reserve("c1")),
    "AlreadyExists",
    "once it exists",
  );
  r.remove("c1");
  r.reserve("c1");
  assert.deepEqual(r.ids(), []);
});

test("lookups name what is missing; a running process of a paused container is PAUSED", () => {
  const r = new ContainerRegistry();
  assert.throws(() => r.get("nope"), /container nope not found/);
  const c = container("c1");
  r.add(c);
  assert.equal(r.get("c1"), c);
  assert.equal(processOf(c, ""), c.init);
  assert.throws(() => processOf(c, "e1"), /exec e1 of container c1 not found/);
  assert.equal(statusOf(c, c.init), "CREATED");
  c.init.phase = "running";
  c.paused = true;
  assert.equal(statusOf(c, c.init), "PAUSED");
  c.init.setExited({ exitStatus: 0, exitedAt: new Date() });
  assert.equal(statusOf(c, c.init), "STOPPED");
});
