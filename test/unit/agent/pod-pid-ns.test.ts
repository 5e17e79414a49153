import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, test } from "node:test";
import { execa } from "execa";
import { ContainerManager } from "../../../runtime/agent/containers.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { ExitMonitor } from "../../../runtime/agent/exit-monitor.ts";
import { PodPidNamespace, pidNamespaceFor } from "../../../runtime/agent/pod-pid-ns.ts";
import { Runc } from "../../../runtime/agent/runc.ts";
import { prepareBundle } from "../../../runtime/agent/spec.ts";
import type { OciSpec } from "../../../runtime/contract/oci.ts";
import * as h from "./harness.ts";

/** Children of pid, from /proc (state and command of each). */
function children(pid: number): Array<{ pid: number; state: string }> {
  const out: Array<{ pid: number; state: string }> = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(ppid) === pid) out.push({ pid: Number(e), state: state ?? "" });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const nsOf = (p: string) => readlinkSync(p);
/** Above the kernel's PID_MAX_LIMIT: a pid no process has here, like the VMM's pid on the host seen in the guest. */
const HOST_PID_PATH = `/proc/${4 * 1024 * 1024 + 1}/ns/pid`;

// Containers orphan processes through runc; init reaps them (see underInit).
if (await h.underInit(import.meta.url)) {
  test("a pid namespace path must be containerd's /proc/<pid>/ns/pid", () => {
    const pod = { path: () => "/pod" };
    for (const bad of ["/run/x", "/proc/self/ns/pid", "/proc/0/ns/pid", "/proc/1/ns/net", "/proc/1/../1/ns/pid"]) {
      assert.throws(
        () => pidNamespaceFor(bad, pod),
        (e: unknown) => e instanceof TaskError && e.code === "InvalidArgument" && e.message.includes(bad),
      );
    }
    // The sandbox's pid (the VMM's, on the host) or a process of the agent's own namespace: the pod's namespace.
    assert.equal(pidNamespaceFor(HOST_PID_PATH, pod), "/pod");
    assert.equal(pidNamespaceFor(`/proc/${process.pid}/ns/pid`, pod), "/pod");
  });

  await h.requireTools();
  await h.addonsReady();
  const s = await h.scratch("podpidns");
  const exits = ExitMonitor.fromInit();
  const pod = new PodPidNamespace();
  after(async () => {
    pod.stop();
    exits.close();
    await s.cleanup();
  });

  test("the pod's init is PID 1 of a namespace of its own, holds none of the agent's files, and reaps orphans", async () => {
    const p = pod.path();
    const pid = pod.pid!;
    assert.equal(p, `/proc/${pid}/ns/pid`);
    assert.equal(pod.path(), p, "one namespace for the pod");
    assert.notEqual(nsOf(p), nsOf("/proc/self/ns/pid"));
    assert.match(readFileSync(`/proc/${pid}/status`, "utf8"), new RegExp(`^NSpid:\\s+${pid}\\s+1$`, "m"));
    // Until it has exec'd, the forked child still holds the agent's close-on-exec descriptors.
    await h.until("the init to run sleep", () =>
      readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("/bin/sleep\0"),
    );
    assert.deepEqual(readdirSync(`/proc/${pid}/fd`).sort(), ["0", "1", "2"]);
    // A target container's namespace (any process in a namespace other than the agent's) is joined as it is.
    assert.equal(pidNamespaceFor(p, { path: () => "/pod" }), p);

    // A process whose parent exits inside the namespace is reparented to its PID 1, which must reap it.
    await execa("nsenter", [`--pid=${p}`, "--", "sh", "-c", "sleep 2 </dev/null >/dev/null 2>&1 & exit 0"]);
    await h.until("the orphan to be reparented to the pod's init", () => children(pid).length === 1);
    await h.until("the orphan to exit and be reaped", () => children(pid).length === 0, 10_000);
  });

  test("an init that died is reported, never silently replaced", async () => {
    const other = new PodPidNamespace();
    other.path();
    const pid = other.pid!;
    process.kill(pid, "SIGKILL");
    let err: unknown;
    await h.until("the dead init to be noticed", () => {
      try {
        other.path();
        return false;
      } catch (e) {
        err = e;
        return true;
      }
    });
    assert.ok(err instanceof TaskError && err.code === "FailedPrecondition", String(err));
    assert.match(err.message, new RegExp(`init \\(/bin/sleep infinity, pid ${pid}\\) was killed by SIGKILL`));
    assert.throws(() => other.path(), /the pod's shared PID namespace is gone/, "and stays reported");
    assert.equal(existsSync(`/proc/${pid}`), false, "it was reaped");
    other.stop();
  });

  test("the init dies with the agent that started it", async () => {
    const code = [
      `import { nsAddon } from ${JSON.stringify(path.join(h.repo, "runtime/native/ns/addon.ts"))};`,
      `console.log(nsAddon().spawnPidNsInit("/bin/sleep", ["/bin/sleep", "infinity"]));`,
    ].join("\n");
    const r = await execa(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], { cwd: h.repo });
    const pid = Number(r.stdout.trim());
    assert.ok(pid > 0, r.stdout);
    await h.until(`the init ${pid} to be killed and reaped`, () => !existsSync(`/proc/${pid}`));
  });

  test("containers given containerd's pid path share the pod's PID namespace; the others have their own", {
    timeout: 120_000,
  }, async () => {
    const rootfs = await h.busyboxRootfs(s.dir);
    const lsm = { apparmor: false, selinux: false };
    const m = new ContainerManager({
      runc: new Runc({ root: s.runcRoot, logDir: `${s.dir}/logs` }),
      exits,
      stateDir: `${s.dir}/state`,
      lsm,
      prepareBundle: (source, target) => prepareBundle(source, target, { lsm, podPidNamespace: pod }),
    });
    const bundle = async (id: string, args: string[], shared: boolean) => {
      const b = await h.writeBundle(s.dir, rootfs, id, { args, cgroupParent: s.cgroupParent });
      const file = path.join(b, "config.json");
      const spec = JSON.parse(await readFile(file, "utf8")) as OciSpec;
      spec.linux!.namespaces = [
        shared ? { type: "pid", path: HOST_PID_PATH } : { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
      ];
      await writeFile(file, JSON.stringify(spec));
      return b;
    };
    const run = async (id: string, args: string[], shared: boolean) => {
      await m.create(id, await bundle(id, args, shared), { stdout: "o" });
      const out = h.collect(m.process(id).stdio.stdout);
      await m.start(id);
      return out;
    };
    await run("sleeper", ["sleep", "300"], true);
    const ps = ["ps", "-o", "pid,args"];
    const shared = await run("looker", ps, true);
    assert.equal((await m.wait("looker")).exitStatus, 0);
    await shared.ended;
    const lines = shared.text();
    assert.match(lines, /^\s*1 \/bin\/sleep infinity$/m, "the pod's init is PID 1");
    assert.match(lines, /^\s*\d+ sleep 300$/m, "the other container's process is seen");

    const own = await run("loner", ps, false);
    assert.equal((await m.wait("loner")).exitStatus, 0);
    await own.ended;
    assert.doesNotMatch(own.text(), /sleep/, "a container of its own sees neither");
    assert.match(own.text(), /^\s*1 ps -o pid,args$/m);

    await m.kill("sleeper", undefined, 9);
    await m.wait("sleeper");
    for (const id of ["sleeper", "looker", "loner"]) await m.delete(id);
  });
}
