import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import type { Logger } from "../../../runtime/log/log.ts";
import { TaskStartSchema } from "../../../runtime/protos/gen/containerd/events/task_pb.ts";
import {
  Events,
  type ForwardRequest,
} from "../../../runtime/protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import { EventPublisher, type PublisherOptions } from "../../../runtime/sandboxer/events.ts";
import { Code, TtrpcError, TtrpcServer } from "../../../runtime/ttrpc/index.ts";

/** A forwarded TaskStart, as containerd's Events service sees it. */
interface Seen {
  namespace: string;
  topic: string;
  typeUrl: string;
  containerId: string;
  pid: number;
  stamped: boolean;
}

let dir: string;
let n = 0;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "events-"));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * containerd's ttrpc Events service, answering each Forward with `answer` (which may throw a status or wait).
 * Records what it accepted, every attempt, and the connections it got.
 */
async function containerd(answer: (seen: Seen) => Promise<void> | void = () => {}) {
  const sock = path.join(dir, `containerd-${++n}.sock.ttrpc`);
  const accepted: Seen[] = [];
  const attempts: Seen[] = [];
  let connections = 0;
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  const server = new TtrpcServer().register(Events, {
    forward: async (req: ForwardRequest) => {
      const env = req.envelope!;
      const ev = fromBinary(TaskStartSchema, env.event!.value);
      const seen: Seen = {
        namespace: env.namespace,
        topic: env.topic,
        typeUrl: env.event!.typeUrl,
        containerId: ev.containerId,
        pid: ev.pid,
        stamped: (env.timestamp?.seconds ?? 0n) > 0n,
      };
      attempts.push(seen);
      wake();
      await answer(seen);
      accepted.push(seen);
      wake();
      return {};
    },
  });
  const listener = net.createServer().on("connection", () => connections++);
  const start = async () => {
    server.serve(listener);
    await new Promise<void>((resolve) => listener.listen(sock, resolve));
  };
  cleanups.push(() => server.close());
  /** Resolves once `pred` holds on what was accepted (re-checked at every call and answer). */
  const until = async (pred: (accepted: Seen[], attempts: Seen[]) => boolean) => {
    while (!pred(accepted, attempts)) await new Promise<void>((r) => waiters.push(r));
  };
  return { sock, start, accepted, attempts, until, connections: () => connections };
}

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

function publisher(sock: string, log: Logger = recorder(), options: PublisherOptions = {}) {
  const p = new EventPublisher(sock, log, { backoffMs: [5, 20], ...options });
  cleanups.push(() => p.close());
  return p;
}

const start = (p: EventPublisher, source: string, containerId: string, pid: number, ns = "k8s.io") =>
  p.publish(source, ns, "/tasks/start", TaskStartSchema, {
    $typeName: "containerd.events.TaskStart",
    containerId,
    pid,
  });

/** A gate the server's answer waits on. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

// A regression here shows as an event that never arrives: the timeout turns that hang into a failure.
describe("EventPublisher", { timeout: 20_000 }, () => {
  test("delivers one sandbox's events in order, encoded by the host, stamped, in their namespace", async () => {
    const cd = await containerd();
    await cd.start();
    const p = publisher(cd.sock);
    for (let i = 0; i < 50; i++) start(p, "sb-a", "c1", i, "tenant-ns");
    await cd.until((a) => a.length === 50);
    assert.deepEqual(
      cd.accepted.map((s) => s.pid),
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.deepEqual(cd.accepted[0], {
      namespace: "tenant-ns",
      topic: "/tasks/start",
      typeUrl: "containerd.events.TaskStart",
      containerId: "c1",
      pid: 0,
      stamped: true,
    });
  });

  test("an event containerd rejects is dropped with one warning naming sandbox, topic and error; the next is delivered", async () => {
    const cd = await containerd((s) => {
      if (s.containerId === "poison") throw new TtrpcError(Code.InvalidArgument, "namespace is required");
    });
    await cd.start();
    const log = recorder();
    const p = publisher(cd.sock, log);
    start(p, "sb-a", "poison", 1);
    start(p, "sb-a", "c1", 2);
    await cd.until((a) => a.some((s) => s.containerId === "c1"));
    assert.equal(cd.attempts.filter((s) => s.containerId === "poison").length, 1, "not retried");
    assert.deepEqual(log.warns, [
      "sandbox sb-a: containerd refused event /tasks/start, dropped it: InvalidArgument: namespace is required",
    ]);
  });

  test("transient failures are retried: containerd not there yet, then Unavailable", async () => {
    let unavailable = 2;
    const cd = await containerd(() => {
      if (unavailable-- > 0) throw new TtrpcError(Code.Unavailable, "shutting down");
    });
    const log = recorder();
    const p = publisher(cd.sock, log);
    start(p, "sb-a", "c1", 7);
    setTimeout(() => void cd.start(), 50);
    await cd.until((a) => a.length === 1);
    assert.equal(cd.attempts.length, 3);
    assert.deepEqual(log.warns, [], "nothing was dropped");
  });

  test("sandbox B's event is delivered while A has hundreds queued behind a slow answer", async () => {
    const slow = gate();
    const cd = await containerd(async (s) => {
      if (s.containerId === "a") await slow.opened;
    });
    await cd.start();
    const p = publisher(cd.sock);
    for (let i = 0; i < 300; i++) start(p, "sb-a", "a", i);
    start(p, "sb-b", "b", 1);
    await cd.until((a) => a.some((s) => s.containerId === "b"));
    assert.equal(cd.accepted.length, 1, "only B's event got through so far");
    assert.equal(cd.attempts.filter((s) => s.containerId === "a").length, 1, "A has one call in flight, the rest wait");
    slow.open();
    await cd.until((a) => a.length === 301);
    assert.deepEqual(
      cd.accepted.filter((s) => s.containerId === "a").map((s) => s.pid),
      Array.from({ length: 300 }, (_, i) => i),
      "A's events in order",
    );
    assert.equal(cd.connections(), 1, "one connection, multiplexed; a slow call does not get it closed");
  });

  test("a full queue drops its oldest, reported as a count, and only that sandbox's", async () => {
    const slow = gate();
    const cd = await containerd(async (s) => {
      if (s.containerId === "a") await slow.opened;
    });
    await cd.start();
    const log = recorder();
    const p = publisher(cd.sock, log, { maxQueued: 10, warnWindowMs: 20 });
    start(p, "sb-a", "a", 0);
    await cd.until((_, attempts) => attempts.length === 1);
    for (let i = 1; i < 100; i++) start(p, "sb-a", "a", i);
    for (let i = 0; i < 10; i++) start(p, "sb-b", "b", i);
    await cd.until((a) => a.filter((s) => s.containerId === "b").length === 10);
    assert.equal(log.warns.length, 1, "one line, not one per drop");
    assert.match(log.warns[0]!, /^sandbox sb-a: 10 events wait for containerd; dropped the oldest \(\/tasks\/start\)$/);
    while (log.warns.length < 2) await new Promise((r) => setTimeout(r, 5));
    assert.match(log.warns[1]!, /^89 more like this in the last 0.02 s; the last: sandbox sb-a:/);
    slow.open();
    await cd.until((a) => a.filter((s) => s.containerId === "a").length === 11);
    assert.deepEqual(
      cd.accepted.filter((s) => s.containerId === "a").map((s) => s.pid),
      [0, ...Array.from({ length: 10 }, (_, i) => 90 + i)],
      "the one in flight, then the newest ten",
    );
  });

  test("forget drops a gone sandbox's waiting events", async () => {
    const slow = gate();
    const cd = await containerd(async (s) => {
      if (s.containerId === "a" && s.pid === 0) await slow.opened;
    });
    await cd.start();
    // A deadline past the test's timeout: only a fresh queue lets the next event through.
    const p = publisher(cd.sock, recorder(), { timeoutMs: 60_000 });
    for (let i = 0; i < 5; i++) start(p, "sb-a", "a", i);
    await cd.until((_, attempts) => attempts.length === 1);
    p.forget("sb-a");
    start(p, "sb-a", "again", 9);
    await cd.until((a) => a.length === 1);
    slow.open();
    await cd.until((a) => a.length === 2);
    // The old queue's loop would send its next event straight after this answer: give it the chance.
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      cd.attempts.map((s) => `${s.containerId}/${s.pid}`),
      ["a/0", "again/9"],
      "the call in flight completed; a/1..a/4 were dropped",
    );
  });

  test("a connection on which nothing answers is replaced", async () => {
    let first = true;
    const cd = await containerd(async () => {
      if (first) {
        first = false;
        await new Promise(() => {});
      }
    });
    await cd.start();
    const p = publisher(cd.sock, recorder(), { timeoutMs: 50 });
    start(p, "sb-a", "c1", 1);
    await cd.until((a) => a.length === 1);
    assert.equal(cd.connections(), 2);
  });

  test("a call that runs out of time while others are answered keeps the shared connection", async () => {
    let hung = false;
    const cd = await containerd(async (s) => {
      if (s.containerId === "a" && !hung) {
        hung = true;
        await new Promise(() => {});
      }
    });
    await cd.start();
    const p = publisher(cd.sock, recorder(), { timeoutMs: 1000 });
    start(p, "sb-a", "a", 1);
    await cd.until((_, attempts) => attempts.length === 1);
    start(p, "sb-b", "b", 1);
    await cd.until((a) => a.length === 2);
    assert.deepEqual(
      cd.accepted.map((s) => s.containerId),
      ["b", "a"],
      "A's event retried after its deadline",
    );
    assert.equal(cd.connections(), 1, "B's answer showed the connection alive");
  });
});
