import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, describe, test } from "node:test";
import { ContainerManager } from "../../../runtime/agent/containers.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { ExitMonitor } from "../../../runtime/agent/exit-monitor.ts";
import { Runc } from "../../../runtime/agent/runc.ts";
import { configureLog } from "../../../runtime/log/log.ts";
import * as h from "./harness.ts";

// Everything runs under runtime/native/init (see underInit); the outer process only relays.
if (await h.underInit(import.meta.url)) {
  configureLog({ level: "warn" });
  await h.requireTools();
  await h.addonsReady();
  const s = await h.scratch("containers");
  const rootfs = await h.busyboxRootfs(s.dir);
  const exits = ExitMonitor.fromInit();
  const runc = new Runc({ root: s.runcRoot, logDir: `${s.dir}/runc-logs` });
  const m = new ContainerManager({ runc, exits, stateDir: `${s.dir}/state`, lsm: { apparmor: false, selinux: false } });
  let n = 0;

  const bundle = (args: string[], o: { terminal?: boolean; memoryLimit?: number } = {}) => {
    const id = `c${++n}`;
    return h.writeBundle(s.dir, rootfs, id, { args, cgroupParent: s.cgroupParent, ...o }).then((b) => ({ id, b }));
  };
  const io = { stdout: "out", stderr: "err" };
  const code = (p: Promise<unknown>) =>
    p.then(
      () => assert.fail("expected a TaskError"),
      (e: unknown) => {
        assert.ok(e instanceof TaskError, `not a TaskError: ${e}`);
        return e.code;
      },
    );

  after(async () => {
    await m.shutdown();
    exits.close();
    await s.cleanup();
  });

  describe("ContainerManager", { timeout: 60_000 }, () => {
    test("create, start, wait, delete: stdout, exit code and state transitions", async () => {
      const { id, b } = await bundle(["sh", "-c", "echo out; echo err >&2; echo dev > /dev/stdout; exit 3"]);
      const pid = await m.create(id, b, io);
      assert.ok(pid > 0);
      const st = m.state(id);
      assert.equal(st.status, "CREATED");
      assert.equal(st.bundle, b);
      assert.equal(st.stdout, "out");
      const out = h.collect(m.process(id).stdio.stdout);
      const err = h.collect(m.process(id).stdio.stderr);
      const exited = m.wait(id);
      const events: unknown[] = [];
      const onExit = (ev: unknown) => events.push(ev);
      m.on("exit", onExit);
      assert.equal(await m.start(id), pid);
      const exit = await exited;
      assert.equal(exit.exitStatus, 3);
      m.off("exit", onExit);
      await Promise.all([out.ended, err.ended]);
      assert.equal(out.text(), "out\ndev\n");
      assert.equal(err.text(), "err\n");
      assert.equal(m.state(id).status, "STOPPED");
      assert.equal(m.state(id).exitStatus, 3);
      assert.deepEqual((await m.wait(id)).exitStatus, 3, "a wait after the fact resolves too");
      assert.deepEqual(events, [{ containerId: id, execId: "", pid, ...exit }]);
      const del = await m.delete(id);
      assert.equal(del.pid, pid);
      assert.equal(del.exitStatus, 3);
      assert.equal(await code(Promise.resolve().then(() => m.state(id))), "NotFound");
    });

    test("typed errors: duplicate, unknown, wrong state, finished process", async () => {
      const { id, b } = await bundle(["sleep", "100"]);
      await m.create(id, b, io);
      assert.equal(await code(m.create(id, b, io)), "AlreadyExists");
      assert.equal(await code(m.start("nope")), "NotFound");
      assert.equal(await code(m.start(id, "nope")), "NotFound");
      assert.equal(await code(m.create("bad/id", b, io)), "InvalidArgument");
      assert.equal(await code(m.create("t", b, { terminal: true })), "InvalidArgument");
      await m.start(id);
      assert.equal(await code(m.start(id)), "FailedPrecondition");
      assert.equal(await code(m.delete(id)), "FailedPrecondition");
      await m.kill(id, "", 9);
      assert.equal((await m.wait(id)).exitStatus, 137);
      assert.equal(await code(m.kill(id, "", 9)), "NotFound");
      await m.delete(id);

      // A created container that never started can be deleted: runc kills its waiting init.
      const { id: idle, b: ib } = await bundle(["true"]);
      await m.create(idle, ib, io);
      const waiting = m.wait(idle);
      assert.equal((await m.delete(idle)).exitStatus, 137);
      assert.equal((await waiting).exitStatus, 137);
    });

    test("exec: output, exit code, pids, SIGTERM as 128+15, delete", async () => {
      const { id, b } = await bundle(["sleep", "100"]);
      const initPid = await m.create(id, b, io);
      await m.start(id);
      await m.exec(id, "e1", { args: ["sh", "-c", "echo hi from exec; exit 7"], env: ["PATH=/bin"], cwd: "/" }, io);
      assert.equal(await code(m.exec(id, "e1", { args: ["true"], cwd: "/", env: ["PATH=/bin"] }, io)), "AlreadyExists");
      assert.equal(m.state(id, "e1").status, "CREATED");
      const e1 = m.wait(id, "e1");
      const pid = await m.start(id, "e1");
      const out = h.collect(m.process(id, "e1").stdio.stdout);
      assert.equal((await e1).exitStatus, 7);
      await out.ended;
      assert.equal(out.text(), "hi from exec\n");
      assert.equal((await m.delete(id, "e1")).pid, pid);
      assert.equal(await code(m.wait(id, "e1")), "NotFound");

      await m.exec(id, "sleeper", { args: ["sleep", "100"], cwd: "/", env: ["PATH=/bin"] }, io);
      const sleeperPid = await m.start(id, "sleeper");
      const pids = await m.pids(id);
      assert.deepEqual(pids.map((p) => p.pid).sort(), [initPid, sleeperPid].sort(), `pids: ${JSON.stringify(pids)}`);
      assert.deepEqual(pids.find((p) => p.pid === sleeperPid)?.execId, "sleeper");
      assert.equal(m.state(id, "sleeper").status, "RUNNING");
      assert.equal(await code(m.delete(id, "sleeper")), "FailedPrecondition");
      await m.kill(id, "sleeper", 15);
      assert.equal((await m.wait(id, "sleeper")).exitStatus, 143);
      assert.equal(m.state(id, "sleeper").status, "STOPPED");
      await m.delete(id, "sleeper");
      await m.kill(id, "", 9);
      await m.wait(id);
      await m.delete(id);
    });

    test("kill all reaches every process; a failed exec start is reported and deletable", async () => {
      const { id, b } = await bundle(["sh", "-c", "sleep 1000 & sleep 1000"]);
      await m.create(id, b, io);
      await m.start(id);
      await m.exec(id, "x", { args: ["sleep", "1000"], cwd: "/", env: ["PATH=/bin"] }, io);
      await m.start(id, "x");
      await m.exec(id, "missing", { args: ["/no/such/binary"], cwd: "/", env: ["PATH=/bin"] }, io);
      const err = await m.start(id, "missing").catch((e: Error) => e);
      assert.ok(err instanceof TaskError && err.code === "Internal", String(err));
      assert.match(err.message, /runc exec c\d+ failed: .*no such file/);
      assert.equal((await m.wait(id, "missing")).exitStatus, 255);
      await m.delete(id, "missing");
      await m.kill(id, "", 9, true);
      const [init, x] = await Promise.all([m.wait(id), m.wait(id, "x")]);
      assert.equal(init.exitStatus, 137);
      assert.equal(x.exitStatus, 137);
      assert.deepEqual(await m.pids(id), []);
      await m.delete(id);
    });

    test("pause and resume freeze the container", async () => {
      const { id, b } = await bundle(["sleep", "100"]);
      await m.create(id, b, io);
      assert.equal(await code(m.pause(id)), "FailedPrecondition");
      await m.start(id);
      await m.pause(id);
      assert.equal(m.state(id).status, "PAUSED");
      assert.equal((await runc.state(id)).status, "paused");
      await m.resume(id);
      assert.equal(m.state(id).status, "RUNNING");
      assert.equal((await runc.state(id)).status, "running");
      assert.equal(await code(m.resume(id)), "FailedPrecondition");
      await m.kill(id, "", 9);
      await m.wait(id);
      await m.delete(id);
    });

    test("update sets the memory limit; stats read the cgroup", async () => {
      const { id, b } = await bundle(["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 100"]);
      await m.create(id, b, io);
      await m.start(id);
      const limit = 96 * 1024 * 1024;
      await m.update(id, { memory: { limit, swap: limit } });
      await new Promise((r) => setTimeout(r, 300));
      const st = await m.stats(id);
      if (st.version === 1) {
        assert.equal(st.memory?.usage.limit, BigInt(limit));
        assert.ok((st.memory?.usage.usage ?? 0n) > 0n, "memory usage");
        assert.ok((st.cpu?.usageNs ?? 0n) > 0n, "cpu usage");
      } else {
        assert.equal(st.memory?.max, BigInt(limit));
        assert.ok((st.memory?.current ?? 0n) > 0n, "memory usage");
        assert.ok((st.cpu?.usage_usec ?? 0n) > 0n, "cpu usage");
      }
      assert.ok((st.pids?.current ?? 0n) >= 1n, "pids");
      await m.kill(id, "", 9);
      await m.wait(id);
      await m.delete(id);
    });

    test("terminal: pty output, resize before and after start", async () => {
      const { id, b } = await bundle(["sh", "-c", "stty size; read x; stty size; echo got $x"], { terminal: true });
      await m.create(id, b, { terminal: true, stdin: "in", stdout: "out" });
      const p = m.process(id);
      assert.ok(p.pty);
      assert.ok(Object.is(p.stdio.stdin, p.pty) && Object.is(p.stdio.stdout, p.pty), "stdin and stdout are the pty");
      m.resizePty(id, "", 100, 30);
      const out = h.collect(p.stdio.stdout);
      await m.start(id);
      await h.until("the first stty size", () => out.text().includes("30 100"));
      m.resizePty(id, "", 120, 40);
      p.stdio.stdin?.write("hi\n");
      assert.equal((await m.wait(id)).exitStatus, 0);
      await out.ended;
      assert.match(out.text(), /30 100\r\n.*40 120\r\ngot hi\r\n/s);
      await m.delete(id);
    });

    test("terminal exec; closeIO ends cat", async () => {
      const { id, b } = await bundle(["sleep", "100"]);
      await m.create(id, b, io);
      await m.start(id);
      await m.exec(
        id,
        "tty",
        { args: ["stty", "size"], terminal: true, cwd: "/", env: ["PATH=/bin"] },
        { terminal: true, stdout: "o" },
      );
      m.resizePty(id, "tty", 90, 25);
      await m.start(id, "tty");
      const tout = h.collect(m.process(id, "tty").stdio.stdout);
      assert.equal((await m.wait(id, "tty")).exitStatus, 0);
      await tout.ended;
      assert.equal(tout.text(), "25 90\r\n");
      await m.delete(id, "tty");

      await m.exec(id, "cat", { args: ["cat"], cwd: "/", env: ["PATH=/bin"] }, { stdin: "i", stdout: "o" });
      await m.start(id, "cat");
      const cat = m.process(id, "cat");
      const out = h.collect(cat.stdio.stdout);
      cat.stdio.stdin?.write("abc\n");
      await h.until("cat's echo", () => out.text() === "abc\n");
      m.closeIO(id, "cat");
      assert.equal((await m.wait(id, "cat")).exitStatus, 0);
      await m.delete(id, "cat");
      await m.kill(id, "", 9);
      await m.wait(id);
      await m.delete(id);
    });

    test("an OOM kill is reported before the exit", async () => {
      // A shell doubling a string grows without bound; 16 MiB (swap included) stops it soon.
      const limit = 16 * 1024 * 1024;
      const { id, b } = await bundle(["sh", "-c", "x=0123456789; while :; do x=$x$x; done"], { memoryLimit: limit });
      await m.create(id, b, io);
      const order: string[] = [];
      const onOom = (ev: { containerId: string }) => ev.containerId === id && order.push("oom");
      const onExit = (ev: { containerId: string }) => ev.containerId === id && order.push("exit");
      m.on("oom", onOom);
      m.on("exit", onExit);
      await m.start(id);
      const exit = await m.wait(id);
      m.off("oom", onOom);
      m.off("exit", onExit);
      assert.equal(exit.exitStatus, 137);
      assert.deepEqual(order, ["oom", "exit"]);
      await m.delete(id);
    });

    test("many short execs leave no zombies and no fds behind", async () => {
      const { id, b } = await bundle(["sleep", "100"]);
      await m.create(id, b, io);
      await m.start(id);
      const fds = () => readdirSync("/proc/self/fd").length;
      const before = fds();
      for (let i = 0; i < 20; i++) {
        await m.exec(id, `q${i}`, { args: ["sh", "-c", `exit ${i}`], cwd: "/", env: ["PATH=/bin"] }, io);
        await m.start(id, `q${i}`);
        assert.equal((await m.wait(id, `q${i}`)).exitStatus, i);
        await m.delete(id, `q${i}`);
      }
      await h.until("fds released", () => fds() <= before, 2000);
      assert.deepEqual(h.zombies([process.pid, process.ppid]), []);
      await m.kill(id, "", 9);
      await m.wait(id);
      await m.delete(id);
    });

    test("start is announced before the exit, even for a process that exits while runc starts it", async () => {
      const { id, b } = await bundle(["true"]);
      await m.create(id, b, io);
      const order: string[] = [];
      const onStart = (ev: { containerId: string; execId: string }) => order.push(`start ${ev.containerId}`);
      const onExit = (ev: { containerId: string; execId: string }) => order.push(`exit ${ev.containerId}`);
      m.on("start", onStart);
      m.on("exit", onExit);
      try {
        await m.start(id);
        await m.wait(id);
        await h.until("the exit event", () => order.length === 2, 2000);
        assert.deepEqual(order, [`start ${id}`, `exit ${id}`]);
      } finally {
        m.off("start", onStart);
        m.off("exit", onExit);
      }
      await m.delete(id);
    });

    test("delete releases fds; shutdown removes everything, paused or never started", async () => {
      const fds = () => readdirSync("/proc/self/fd").length;
      const { id, b } = await bundle(["true"]);
      const before = fds();
      await m.create(id, b, { stdin: "i", ...io });
      await m.start(id);
      await m.wait(id);
      await m.delete(id);
      const { id: t, b: tb } = await bundle(["true"], { terminal: true });
      await m.create(t, tb, { terminal: true, stdout: "o" });
      await m.start(t);
      await m.wait(t);
      await m.delete(t);
      await h.until("fds released", () => fds() <= before, 2000);
      assert.deepEqual(readdirSync(`${s.dir}/state`), [], "no pid files, process specs or console sockets left");

      const { id: a, b: ab } = await bundle(["sleep", "100"]);
      await m.create(a, ab, io);
      await m.start(a);
      await m.pause(a);
      const { id: c, b: cb } = await bundle(["sleep", "100"]);
      await m.create(c, cb, io);
      await m.shutdown();
      assert.deepEqual(m.list(), []);
      assert.deepEqual((await h.runcList(s.runcRoot)).sort(), []);
    });
  });
}
