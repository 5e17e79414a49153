import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { ContainerState, PodSandboxState } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import {
  type Env,
  mountsUnder,
  RUNTIME_HANDLER,
  STREAMING_HANDLER,
  startEnv,
  storageMountsUnder,
  vmProcesses,
} from "../../testkit/containerd.ts";
import * as cri from "../../testkit/cri.ts";
import { containerConfig, QUICK, SLOW, until } from "../../testkit/cri.ts";

// A real containerd 2.1 drives vmm-sandboxer through CRI, as kubelet would: each pod is a QEMU (TCG) VM.
// TCG boots take ~15-20 s, so CRI calls that boot or stop a VM get generous deadlines.
let env: Env;
const withLogs = (body: () => Promise<void>) => cri.withLogs(env, body);
const runPod = (name: string) => cri.runPod(env, name);
const podConfig = (name: string) => cri.podConfig(env, name);
const removePod = (id: string) => cri.removePod(env, id);

before(async () => {
  env = await startEnv();
});

after(async () => {
  await env?.teardown();
});

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "utf8");

/**
 * Removes a container whose task connection dropped, as kubelet does: CRI finishes its exit handling (through
 * containerd-shim-kuasar-vmm-v1 delete, with retries) before it lets the container go, so remove until accepted.
 */
async function removeExited(containerId: string): Promise<void> {
  await until(`container ${containerId} to be removable`, 60_000, async () => {
    await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW).catch(() => undefined);
    return env.runtime.removeContainer({ containerId }, SLOW).then(
      () => true,
      () => undefined,
    );
  });
}

test("a pod VM runs a container through CRI: logs, exec, stop, remove", { timeout: 300_000 }, () =>
  withLogs(async () => {
    const pod = await runPod("e2e-one");
    const status = await env.runtime.podSandboxStatus({ podSandboxId: pod.id }, QUICK);
    assert.equal(status.status?.state, PodSandboxState.SANDBOX_READY);
    assert.equal(vmProcesses(env.sandboxDir(pod.id)).length > 0, true, "a QEMU runs for the pod");

    const { containerId } = await env.runtime.createContainer(
      {
        podSandboxId: pod.id,
        config: containerConfig("echo", 'echo "hello from $(hostname)"; echo oops >&2; exec sleep 3600'),
        sandboxConfig: pod.config,
      },
      SLOW,
    );
    await env.runtime.startContainer({ containerId }, SLOW);

    // CRI log format: "<RFC3339Nano time> <stream> <P|F> <text>".
    const logFile = path.join(pod.config.logDirectory!, "echo.log");
    const log = await until("the container's output in its CRI log", 30_000, async () => {
      const text = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
      return /stderr F oops/.test(text) && /stdout F hello/.test(text) ? text : undefined;
    });
    assert.match(log, /^\d{4}-\d\d-\d\dT\S+ stdout F hello from e2e-one$/m);
    assert.match(log, /^\S+ stderr F oops$/m);

    const exec = await env.runtime.execSync(
      { containerId, cmd: ["sh", "-c", "echo out-$((6*7)); echo err >&2; exit 3"], timeout: 60n },
      SLOW,
    );
    assert.equal(Buffer.from(exec.stdout).toString(), "out-42\n");
    assert.equal(Buffer.from(exec.stderr).toString(), "err\n");
    assert.equal(exec.exitCode, 3);

    const running = await env.runtime.containerStatus({ containerId }, QUICK);
    assert.equal(running.status?.state, ContainerState.CONTAINER_RUNNING);

    await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
    const stopped = await env.runtime.containerStatus({ containerId }, QUICK);
    assert.equal(stopped.status?.state, ContainerState.CONTAINER_EXITED);
    await env.runtime.removeContainer({ containerId }, SLOW);
    await removePod(pod.id);
  }),
);

test(
  "pod networking through the CNI bridge: the container sees the pod IP and reaches the host",
  { timeout: 300_000 },
  () =>
    withLogs(async () => {
      const config = await podConfig("e2e-net");
      const { podSandboxId } = await env.runtime.runPodSandbox({ config, runtimeHandler: RUNTIME_HANDLER }, SLOW);
      const { status } = await env.runtime.podSandboxStatus({ podSandboxId }, QUICK);
      const ip = status?.network?.ip ?? "";
      assert.ok(ip.startsWith(env.cni.subnet.split(".").slice(0, 3).join(".")), `pod IP ${ip} in ${env.cni.subnet}`);
      const { containerId } = await env.runtime.createContainer(
        { podSandboxId, config: containerConfig("net", "exec sleep 3600"), sandboxConfig: config },
        SLOW,
      );
      await env.runtime.startContainer({ containerId }, SLOW);
      const r = await env.runtime.execSync(
        { containerId, cmd: ["sh", "-c", `ip -4 addr show; ping -c 2 -W 5 ${env.cni.gateway}`], timeout: 60n },
        SLOW,
      );
      const out = Buffer.from(r.stdout).toString();
      assert.match(out, new RegExp(`inet ${ip.replace(/\./g, "\\.")}/24`), "the guest NIC has the pod IP");
      assert.equal(r.exitCode, 0, `ping ${env.cni.gateway} (the bridge on the host):\n${out}${Buffer.from(r.stderr)}`);
      await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
      await env.runtime.removeContainer({ containerId }, SLOW);
      await removePod(podSandboxId);
    }),
);

test(
  "io_type streaming: stdio through containerd's Streaming service reaches the CRI log and ExecSync",
  { timeout: 300_000 },
  () =>
    withLogs(async () => {
      const config = await podConfig("e2e-stream");
      const { podSandboxId } = await env.runtime.runPodSandbox({ config, runtimeHandler: STREAMING_HANDLER }, SLOW);
      const { containerId } = await env.runtime.createContainer(
        {
          podSandboxId,
          config: containerConfig("streamer", "echo streamed out; echo streamed err >&2; exec sleep 3600"),
          sandboxConfig: config,
        },
        SLOW,
      );
      await env.runtime.startContainer({ containerId }, SLOW);
      const log = path.join(config.logDirectory!, "streamer.log");
      await until("both streams in the CRI log", 30_000, async () => {
        const text = existsSync(log) ? readFileSync(log, "utf8") : "";
        return /stdout F streamed out/.test(text) && /stderr F streamed err/.test(text) ? true : undefined;
      });
      const r = await env.runtime.execSync(
        { containerId, cmd: ["sh", "-c", "echo via exec; cat /etc/resolv.conf; exit 3"], timeout: 60n },
        SLOW,
      );
      // The pod's resolv.conf (no dns_config here: the host's) reaches containers with streaming io as with fifos.
      assert.equal(Buffer.from(r.stdout).toString(), `via exec\n${readFileSync("/etc/resolv.conf", "utf8")}`);
      assert.equal(r.exitCode, 3);
      await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
      await env.runtime.removeContainer({ containerId }, SLOW);
      await removePod(podSandboxId);
    }),
);

test("a container that exits non-zero: CRI reports its exit code", { timeout: 300_000 }, () =>
  withLogs(async () => {
    const pod = await runPod("e2e-exit");
    const created = Date.now();
    const { containerId } = await env.runtime.createContainer(
      { podSandboxId: pod.id, config: containerConfig("fail", "echo bye; exit 7"), sandboxConfig: pod.config },
      SLOW,
    );
    await env.runtime.startContainer({ containerId }, SLOW);
    // The exit reaches CRI only as a TaskExit event the daemon forwards to containerd.
    const exited = await cri.untilExited(env, containerId, "the container to be reported exited", 30_000);
    assert.equal(exited.exitCode, 7);
    // The exit time is the guest's clock, set to the host's at boot in whole seconds: it falls between the
    // container's creation and now, give or take that clock's error (a fast exit may precede CRI's startedAt).
    const finished = Number(exited.finishedAt / 1_000_000n);
    const clockError = 2000;
    assert.ok(
      finished >= created - clockError && finished <= Date.now() + clockError,
      `created ${new Date(created).toISOString()}, finished ${new Date(finished).toISOString()} (guest clock)`,
    );
    assert.match(readFileSync(path.join(pod.config.logDirectory!, "fail.log"), "utf8"), /stdout F bye$/m);
    await env.runtime.removeContainer({ containerId }, SLOW);
    await removePod(pod.id);
  }),
);

test("two containers share one pod VM", { timeout: 300_000 }, () =>
  withLogs(async () => {
    const pod = await runPod("e2e-two");
    const ids: string[] = [];
    for (const name of ["first", "second"]) {
      const { containerId } = await env.runtime.createContainer(
        { podSandboxId: pod.id, config: containerConfig(name, "exec sleep 3600"), sandboxConfig: pod.config },
        SLOW,
      );
      await env.runtime.startContainer({ containerId }, SLOW);
      ids.push(containerId);
    }
    const { containers } = await env.runtime.listContainers({ filter: { podSandboxId: pod.id } }, QUICK);
    assert.deepEqual(
      containers.map((c) => c.state),
      [ContainerState.CONTAINER_RUNNING, ContainerState.CONTAINER_RUNNING],
    );
    assert.equal(vmProcesses(env.sandboxDir(pod.id)).filter((p) => /qemu/.test(cmdline(p))).length, 1, "one VM");

    // Same VM kernel and pod hostname from both; each sees only its own process tree.
    const seen: string[] = [];
    for (const containerId of ids) {
      const r = await env.runtime.execSync(
        { containerId, cmd: ["sh", "-c", "echo $(hostname) $(cat /proc/sys/kernel/random/boot_id)"], timeout: 60n },
        SLOW,
      );
      assert.equal(r.exitCode, 0, Buffer.from(r.stderr).toString());
      seen.push(Buffer.from(r.stdout).toString());
    }
    assert.match(seen[0]!, /^e2e-two \S+\n$/);
    assert.equal(seen[0], seen[1]);

    await env.runtime.stopContainer({ containerId: ids[0]!, timeout: 2n }, SLOW);
    assert.equal(
      (await env.runtime.containerStatus({ containerId: ids[1]! }, QUICK)).status?.state,
      ContainerState.CONTAINER_RUNNING,
      "stopping one container leaves the other running",
    );
    for (const containerId of ids) {
      await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
      await env.runtime.removeContainer({ containerId }, SLOW);
    }
    await removePod(pod.id);
  }),
);

test("a containerd restart keeps the pod READY and its container RUNNING", { timeout: 300_000 }, () =>
  withLogs(async () => {
    const pod = await runPod("e2e-restart");
    const { containerId } = await env.runtime.createContainer(
      { podSandboxId: pod.id, config: containerConfig("keeper", "exec sleep 3600"), sandboxConfig: pod.config },
      SLOW,
    );
    await env.runtime.startContainer({ containerId }, SLOW);
    const vm = vmProcesses(env.sandboxDir(pod.id));

    await env.restartContainerd();
    // CRI recovers sandboxes and tasks in the background after it starts serving.
    await until("the pod to be READY after the restart", 60_000, async () => {
      const { status } = await env.runtime.podSandboxStatus({ podSandboxId: pod.id }, QUICK);
      return status?.state === PodSandboxState.SANDBOX_READY ? true : undefined;
    });
    const { status } = await env.runtime.containerStatus({ containerId }, QUICK);
    assert.equal(status?.state, ContainerState.CONTAINER_RUNNING);
    assert.deepEqual(vmProcesses(env.sandboxDir(pod.id)), vm, "the same VM serves the pod");
    const r = await env.runtime.execSync({ containerId, cmd: ["echo", "still here"], timeout: 60n }, SLOW);
    assert.equal(Buffer.from(r.stdout).toString(), "still here\n");

    await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
    await env.runtime.removeContainer({ containerId }, SLOW);
    await removePod(pod.id);
  }),
);

test("an OOM-killed container is reported with reason OOMKilled", { timeout: 300_000 }, () =>
  withLogs(async () => {
    const pod = await runPod("e2e-oom");
    // The shell doubles a string until the 24 MiB memory cgroup in the guest kills it.
    const config = containerConfig("hog", 'a=x; while true; do a="$a$a"; done');
    config.linux = { resources: { memoryLimitInBytes: 24n << 20n } };
    const { containerId } = await env.runtime.createContainer(
      { podSandboxId: pod.id, config, sandboxConfig: pod.config },
      SLOW,
    );
    await env.runtime.startContainer({ containerId }, SLOW);
    const exited = await cri.untilExited(env, containerId, "the container to be reported exited");
    assert.equal(exited.reason, "OOMKilled", `reason ${exited.reason}, exit code ${exited.exitCode}`);
    assert.equal(exited.exitCode, 137);
    await env.runtime.removeContainer({ containerId }, SLOW);
    await removePod(pod.id);
  }),
);

test(
  "kill -9 of vmm-sandboxer: the pod stays READY and usable, nothing is left behind; kill -9 of the VMM: NOTREADY",
  { timeout: 300_000 },
  () =>
    withLogs(async () => {
      const pod = await runPod("e2e-crash");
      const { containerId } = await env.runtime.createContainer(
        { podSandboxId: pod.id, config: containerConfig("first", "exec sleep 3600"), sandboxConfig: pod.config },
        SLOW,
      );
      await env.runtime.startContainer({ containerId }, SLOW);
      const vm = vmProcesses(env.sandboxDir(pod.id));
      assert.ok(
        storageMountsUnder(env.sandboxDir(pod.id)).length > 0,
        "the container's rootfs is mounted in the share",
      );

      await env.restartDaemon();
      assert.match(env.daemon.log(), new RegExp(`sandbox ${pod.id} recovered`));
      assert.deepEqual(vmProcesses(env.sandboxDir(pod.id)), vm, "the same VM serves the pod");
      // containerd's connection to the controller socket backs off while the daemon is down, then comes back.
      await until("containerd to reach the restarted daemon", 60_000, async () => {
        const r = await env.runtime.podSandboxStatus({ podSandboxId: pod.id }, QUICK).catch(() => undefined);
        return r?.status?.state === PodSandboxState.SANDBOX_READY ? true : undefined;
      });
      // CRI records a container whose task connection dropped as exited (255), once containerd has noticed the drop,
      // which may come after the pod reads READY again; the restarted daemon stops it in the guest and frees its
      // storage, and kubelet would start a new one.
      await cri.untilExited(env, containerId, "CRI to record the container exited");
      await until("the restarted daemon to stop the container in the guest", 60_000, async () =>
        new RegExp(`stopped 1 container\\(s\\) .*${containerId}`).test(env.daemon.log()) ? true : undefined,
      );
      assert.deepEqual(storageMountsUnder(env.sandboxDir(pod.id)), [], "its storage was unmounted");
      await removeExited(containerId);
      const next = await env.runtime.createContainer(
        { podSandboxId: pod.id, config: containerConfig("second", "exec sleep 3600"), sandboxConfig: pod.config },
        SLOW,
      );
      await env.runtime.startContainer({ containerId: next.containerId }, SLOW);
      // CRI's default pid mode is POD: the pod's PID 1 (`sleep infinity`) is visible too, so count `sleep 3600`s.
      const script = "echo after the crash; ps -o args | grep -c '^sleep 3600'";
      const r = await env.runtime.execSync(
        { containerId: next.containerId, cmd: ["sh", "-c", script], timeout: 60n },
        SLOW,
      );
      assert.equal(Buffer.from(r.stdout).toString(), "after the crash\n1\n", "one sleep: the old container is gone");

      const qemu = vm.find((p) => /qemu/.test(cmdline(p)))!;
      process.kill(qemu, "SIGKILL");
      await until("the pod to turn NOTREADY", 30_000, async () => {
        const { status } = await env.runtime.podSandboxStatus({ podSandboxId: pod.id }, QUICK);
        return status?.state === PodSandboxState.SANDBOX_NOTREADY ? true : undefined;
      });
      await until("the VM's helpers to be gone", 10_000, async () =>
        vmProcesses(env.sandboxDir(pod.id)).length ? undefined : true,
      );
      // Released right after the helpers are stopped.
      await until("nothing of the stopped sandbox to stay mounted", 10_000, async () =>
        mountsUnder(env.sandboxDir(pod.id)).length ? undefined : true,
      );
      await removeExited(next.containerId);
      await removePod(pod.id);
    }),
);
