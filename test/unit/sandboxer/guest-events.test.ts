import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { afterEach, describe, mock, test } from "node:test";
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { ContainerManager } from "../../../runtime/agent/containers.ts";
import { EventQueue } from "../../../runtime/agent/event-queue.ts";
import { queueTaskEvents } from "../../../runtime/agent/task-events.ts";
import type { Logger } from "../../../runtime/log/log.ts";
import {
  TaskExecStartedSchema,
  TaskExitSchema,
  TaskOOMSchema,
  TaskStartSchema,
} from "../../../runtime/protos/gen/containerd/events/task_pb.ts";
import type { Envelope } from "../../../runtime/protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import type { EventPublisher } from "../../../runtime/sandboxer/events.ts";
import {
  type Admission,
  admitGuestEvent,
  type GuestEnvelope,
  GuestEventForwarder,
  MAX_GUEST_EVENT_BYTES,
} from "../../../runtime/sandboxer/guest-events.ts";

const C1 = "c1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EXEC = "exec-3f2a";
/** This sandbox's one container, created by containerd in namespace "tenant-ns". */
const lookups: string[] = [];
const namespaceOf = (id: string) => {
  lookups.push(id);
  return id === C1 ? "tenant-ns" : undefined;
};

/** The events vmm-task really sends, made by its own code. */
async function guestEvents(): Promise<Envelope[]> {
  const manager = new EventEmitter();
  const queue = new EventQueue();
  queueTaskEvents(manager as unknown as ContainerManager, queue);
  manager.emit("start", { containerId: C1, execId: "", pid: 42 });
  manager.emit("start", { containerId: C1, execId: EXEC, pid: 43 });
  manager.emit("exit", {
    containerId: C1,
    execId: EXEC,
    pid: 43,
    exitStatus: 1,
    exitedAt: new Date(1_700_000_000_123),
  });
  manager.emit("oom", { containerId: C1 });
  manager.emit("exit", { containerId: C1, execId: "", pid: 42, exitStatus: 137, exitedAt: new Date() });
  const signal = new AbortController().signal;
  return Promise.all(Array.from({ length: 5 }, () => queue.next(signal)));
}

function envelope<D extends DescMessage>(
  topic: string,
  schema: D,
  msg: MessageInitShape<D>,
  typeUrl = schema.typeName,
) {
  return { topic, event: { typeUrl, value: toBinary(schema, create(schema, msg)) } };
}

function refused(a: Admission, reason: RegExp): void {
  assert.equal(a.ok, false, "refused");
  if (!a.ok) assert.match(a.reason, reason);
}

function admitted(a: Admission) {
  assert.ok(a.ok, a.ok ? "" : a.reason);
  return { ...a, bytes: toBinary(a.schema, a.message) };
}

describe("admitGuestEvent", () => {
  test("admits every event the guest sends, re-encoded, in the namespace containerd created the container in", async () => {
    const events = await guestEvents();
    assert.deepEqual(
      events.map((e) => e.topic),
      ["/tasks/start", "/tasks/exec-started", "/tasks/exit", "/tasks/oom", "/tasks/exit"],
    );
    for (const ev of events) {
      assert.equal(ev.namespace, "k8s.io", "the guest names a namespace of its own");
      const a = admitted(admitGuestEvent(ev, namespaceOf));
      assert.equal(a.namespace, "tenant-ns", "the host's namespace, not the envelope's");
      assert.equal(a.topic, ev.topic);
      assert.equal(a.schema.typeName, ev.event?.typeUrl);
      assert.deepEqual(a.bytes, ev.event?.value, `${ev.topic} re-encodes to what the guest meant`);
    }
  });

  test("accepts the type.googleapis.com/ form of the type URL", () => {
    const ev = envelope(
      "/tasks/oom",
      TaskOOMSchema,
      { containerId: C1 },
      "type.googleapis.com/containerd.events.TaskOOM",
    );
    assert.equal(admitted(admitGuestEvent(ev, namespaceOf)).schema.typeName, "containerd.events.TaskOOM");
  });

  test("re-encodes: fields the schema does not know never reach containerd", () => {
    const clean = toBinary(TaskOOMSchema, create(TaskOOMSchema, { containerId: C1 }));
    const extra = new BinaryWriter().tag(99, WireType.LengthDelimited).string("smuggled").finish();
    const ev = {
      topic: "/tasks/oom",
      event: { typeUrl: TaskOOMSchema.typeName, value: new Uint8Array([...clean, ...extra]) },
    };
    assert.deepEqual(admitted(admitGuestEvent(ev, namespaceOf)).bytes, clean);
  });

  test("refuses topics a guest may not send: the host's own task events and anything else", () => {
    for (const topic of [
      "/tasks/delete",
      "/tasks/create",
      "/tasks/exec-added",
      "/tasks/paused",
      "/containers/delete",
    ]) {
      refused(
        admitGuestEvent(envelope(topic, TaskOOMSchema, { containerId: C1 }), namespaceOf),
        /topic .* is not a task event/,
      );
    }
    refused(admitGuestEvent(envelope("__proto__", TaskOOMSchema, { containerId: C1 }), namespaceOf), /topic/);
  });

  test("refuses a type URL that is not the topic's message", () => {
    const oom = { containerId: C1 };
    refused(
      admitGuestEvent(envelope("/tasks/exit", TaskOOMSchema, oom), namespaceOf),
      /type URL "containerd.events.TaskOOM" is not containerd.events.TaskExit/,
    );
    refused(
      admitGuestEvent(
        envelope("/tasks/oom", TaskOOMSchema, oom, "evil.example/containerd.events.TaskOOM"),
        namespaceOf,
      ),
      /type URL/,
    );
    refused(admitGuestEvent({ topic: "/tasks/oom" }, namespaceOf), /no event/);
  });

  test("refuses bytes that are not the message", () => {
    const ev = (value: Uint8Array) => ({ topic: "/tasks/exit", event: { typeUrl: TaskExitSchema.typeName, value } });
    refused(
      admitGuestEvent(ev(new Uint8Array([0x0a, 0x40, 0x61])), namespaceOf),
      /payload is not a containerd.events.TaskExit/,
    );
    refused(admitGuestEvent(ev(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])), namespaceOf), /payload is not/);
    const badUtf8 = new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .bytes(new Uint8Array([0xc3, 0x28]))
      .finish();
    refused(admitGuestEvent(ev(badUtf8), namespaceOf), /payload is not/);
    // pid (a varint) sent length-delimited: protobuf-es alone would read it out of step
    const pidAsBytes = new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .string(C1)
      .tag(3, WireType.LengthDelimited)
      .bytes(new Uint8Array([1, 2, 3]))
      .finish();
    refused(admitGuestEvent(ev(pidAsBytes), namespaceOf), /field pid has wire type LengthDelimited, not Varint/);
    const nanosAsFixed = new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .string(C1)
      .tag(5, WireType.LengthDelimited)
      .bytes(new BinaryWriter().tag(2, WireType.Bit32).fixed32(5).finish())
      .finish();
    refused(admitGuestEvent(ev(nanosAsFixed), namespaceOf), /field exited_at.nanos has wire type Bit32/);
  });

  test("refuses a payload over the bound before decoding it", () => {
    const value = new Uint8Array(MAX_GUEST_EVENT_BYTES + 1).fill(0xff);
    const a = admitGuestEvent({ topic: "/tasks/oom", event: { typeUrl: TaskOOMSchema.typeName, value } }, namespaceOf);
    refused(a, /payload of 65537 bytes is over 65536/);
  });

  test("refuses a container that is not this sandbox's, whatever namespace the guest names", () => {
    lookups.length = 0;
    const other = "other0sandbox0container";
    const ev = { ...envelope("/tasks/exit", TaskExitSchema, { containerId: other, id: other }), namespace: "k8s.io" };
    refused(
      admitGuestEvent(ev, namespaceOf),
      /container_id "other0sandbox0container" is not a container of this sandbox/,
    );
    assert.deepEqual(lookups, [other]);
  });

  test("refuses invalid ids before looking them up", () => {
    lookups.length = 0;
    for (const bad of ["", "../../etc", "a/b", "x".repeat(129), "a\nb"]) {
      refused(
        admitGuestEvent(envelope("/tasks/oom", TaskOOMSchema, { containerId: bad }), namespaceOf),
        /container_id .* is invalid/,
      );
    }
    assert.deepEqual(lookups, [], "no invalid id reaches the lookup");
    refused(
      admitGuestEvent(
        envelope("/tasks/exec-started", TaskExecStartedSchema, { containerId: C1, execId: "../x" }),
        namespaceOf,
      ),
      /exec_id "..\/x" is invalid/,
    );
    refused(
      admitGuestEvent(
        envelope("/tasks/exec-started", TaskExecStartedSchema, { containerId: C1, execId: "" }),
        namespaceOf,
      ),
      /exec_id "" is invalid/,
    );
    refused(
      admitGuestEvent(envelope("/tasks/exit", TaskExitSchema, { containerId: C1, id: "a b" }), namespaceOf),
      /id "a b" is invalid/,
    );
  });

  test("refuses an exit time no clock can show", () => {
    const ev = envelope("/tasks/exit", TaskExitSchema, {
      containerId: C1,
      id: C1,
      exitedAt: { seconds: 1n, nanos: -1 },
    });
    refused(admitGuestEvent(ev, namespaceOf), /exited_at 1s -1ns is not a valid time/);
    const late = envelope("/tasks/exit", TaskExitSchema, { containerId: C1, id: C1, exitedAt: { seconds: 1n << 62n } });
    refused(admitGuestEvent(late, namespaceOf), /exited_at/);
  });

  test("a guest's string in a reason is cut short and cannot forge a log line", () => {
    const a = admitGuestEvent(
      envelope(`/tasks/x\n[FAKE ERROR] ${"y".repeat(10_000)}`, TaskStartSchema, {}),
      namespaceOf,
    );
    refused(a, /topic/);
    if (!a.ok) {
      assert.ok(a.reason.length < 120, `reason is ${a.reason.length} chars`);
      assert.ok(!a.reason.includes("\n"), "no raw newline");
    }
  });
});

/** A logger keeping its warn lines. */
function recorder(): Logger & { warns: string[] } {
  const warns: string[] = [];
  const log = {
    warns,
    error: () => {},
    warn: (m: string) => warns.push(m),
    info: () => {},
    debug: () => {},
    trace: () => {},
    enabled: () => true,
    with: () => log,
    child: () => log,
  };
  return log;
}

function fakePublisher() {
  const published: Array<{ source: string; namespace: string; topic: string; bytes: Uint8Array }> = [];
  const publisher = {
    publish: (source: string, namespace: string, topic: string, schema: DescMessage, event: never) =>
      published.push({ source, namespace, topic, bytes: toBinary(schema, event) }),
  };
  return { published, publisher: publisher as unknown as EventPublisher };
}

describe("GuestEventForwarder", () => {
  afterEach(() => mock.timers.reset());

  test("publishes admitted events under the sandbox's id and logs refusals once per window, with a count", async () => {
    mock.timers.enable({ apis: ["setTimeout", "Date"] });
    const { published, publisher } = fakePublisher();
    const log = recorder();
    const fwd = new GuestEventForwarder(publisher, "sb-1", namespaceOf, log, { burst: 10_000, warnWindowMs: 10_000 });
    const good = envelope("/tasks/oom", TaskOOMSchema, { containerId: C1 });
    const forged: GuestEnvelope = envelope("/tasks/delete", TaskOOMSchema, { containerId: C1 });
    await fwd.forward(good);
    for (let i = 0; i < 1000; i++) await fwd.forward(forged);
    assert.deepEqual(
      published.map((p) => [p.source, p.namespace, p.topic]),
      [["sb-1", "tenant-ns", "/tasks/oom"]],
    );
    assert.equal(log.warns.length, 1, "one line for the first refusal, not one per event");
    assert.match(log.warns[0]!, /sandbox sb-1: refused an event from the guest: topic "\/tasks\/delete"/);
    mock.timers.tick(10_000);
    assert.equal(log.warns.length, 2);
    assert.match(log.warns[1]!, /^999 more like this in the last 10 s; the last: sandbox sb-1: refused/);
  });

  test("paces the pull loop once the burst is spent", async () => {
    mock.timers.enable({ apis: ["setTimeout", "Date"] });
    const { published, publisher } = fakePublisher();
    const fwd = new GuestEventForwarder(publisher, "sb-1", namespaceOf, recorder(), { ratePerSec: 10, burst: 3 });
    const good = envelope("/tasks/oom", TaskOOMSchema, { containerId: C1 });
    for (let i = 0; i < 3; i++) await fwd.forward(good);
    let fourth = false;
    const p = fwd.forward(good).then(() => {
      fourth = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(fourth, false, "the fourth waits for a token");
    assert.equal(published.length, 4, "pacing delays the next pull, not this event");
    mock.timers.tick(100);
    await p;
    assert.equal(fourth, true);
  });
});
