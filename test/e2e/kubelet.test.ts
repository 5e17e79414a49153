import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import WebSocket from "ws";
import {
  MountPropagation,
  type MountSchema,
  NamespaceMode,
} from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { type Env, mountsUnder, RUNTIME_HANDLER, startEnv, vmProcesses } from "../../testkit/containerd.ts";
import {
  containerConfig,
  logLines,
  podConfig,
  QUICK,
  removePod,
  runPod,
  SLOW,
  until,
  untilExited,
  withLogs,
} from "../../testkit/cri.ts";

// Pods as kubelet runs them, through containerd 2.1's CRI: what a runc pod gets, a VM pod gets too. One pod VM is
// shared by the tests where they do not disturb each other.
let env: Env;
let pod: Awaited<ReturnType<typeof runPod>>;
const DNS = {
  servers: ["10.96.0.10", "10.96.0.11"],
  searches: ["e2e.svc.cluster.local", "svc.cluster.local", "cluster.local"],
  options: ["ndots:5", "timeout:2"],
};

before(async () => {
  env = await startEnv();
  pod = await runPod(env, "kube-pod", { dnsConfig: DNS });
});

after(async () => {
  if (pod) await removePod(env, pod.id).catch(() => undefined);
  await env?.teardown();
});

/**
 * Runs script in a new container of the shared pod and returns its stdout lines once it printed `end` and exited.
 * As kubelet does, an exited container is removed without a StopContainer, which would race containerd's own
 * clean-up of the exited task (its Kill can meet the task connection containerd just closed).
 */
async function run(name: string, script: string, extra: Record<string, unknown> = {}): Promise<string[]> {
  const { containerId } = await env.runtime.createContainer(
    {
      podSandboxId: pod.id,
      config: containerConfig(name, `${script}; echo end`, extra),
      sandboxConfig: pod.config,
    },
    SLOW,
  );
  await env.runtime.startContainer({ containerId }, SLOW);
  const lines = await logLines(path.join(pod.config.logDirectory as string, `${name}.log`), /stdout F end$/m);
  await untilExited(env, containerId, `container ${name} to be reported exited`);
  await env.runtime.removeContainer({ containerId }, QUICK);
  return lines.slice(0, -1);
}

test(
  "DNS, hosts and hostname: each container gets the pod's, exactly as containerd writes them for runc",
  { timeout: 300_000 },
  () =>
    withLogs(env, async () => {
      const out = await run("dns", "cat /etc/resolv.conf; echo ---; cat /etc/hostname; echo ---; cat /etc/hosts");
      const [resolv, hostname, hosts] = out.join("\n").split("\n---\n");
      assert.equal(
        `${resolv}\n`,
        "search e2e.svc.cluster.local svc.cluster.local cluster.local\n" +
          "nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5 timeout:2\n",
      );
      assert.equal(hostname, "kube-pod");
      assert.equal(`${hosts}\n`, readFileSync("/etc/hosts", "utf8"), "the host's /etc/hosts, as containerd copies it");

      // kubelet mounts a /etc/hosts of its own (host aliases, the pod IP): that one wins, and the pod's two others stay.
      const kubeletHosts = path.join(env.dir, "pods", "kube-pod", "etc-hosts");
      await writeFile(kubeletHosts, "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.1.2.3\tkube-pod\n");
      const own = await run("dns2", "cat /etc/hosts; echo ---; cat /etc/resolv.conf", {
        mounts: [{ containerPath: "/etc/hosts", hostPath: kubeletHosts }],
      });
      const [hosts2, resolv2] = own.join("\n").split("\n---\n");
      assert.equal(`${hosts2}\n`, readFileSync(kubeletHosts, "utf8"));
      assert.match(resolv2 ?? "", /^nameserver 10\.96\.0\.10$/m);

      // One pod-wide file, writable as in a runc pod: what one container adds, the next one sees.
      await run("writer", "echo '10.9.9.9 added-by-a-container' >> /etc/hosts");
      assert.ok((await run("reader", "cat /etc/hosts")).includes("10.9.9.9 added-by-a-container"));
    }),
);

test(
  "host network, PID and IPC namespaces are refused by name, and the refusal leaves nothing behind",
  { timeout: 300_000 },
  () =>
    withLogs(env, async () => {
      const before = readdirSync(path.join(env.dir, "state")).sort();
      for (const [field, k8s] of [
        ["network", "hostNetwork"],
        ["pid", "hostPID"],
        ["ipc", "hostIPC"],
      ] as const) {
        const config = await podConfig(env, `host-${field}`, {
          linux: { securityContext: { namespaceOptions: { [field]: NamespaceMode.NODE } } },
        });
        await assert.rejects(
          env.runtime.runPodSandbox({ config, runtimeHandler: RUNTIME_HANDLER }, SLOW),
          new RegExp(`namespace_options\\.${field} = NODE \\(${k8s}\\) cannot be honoured in a VM sandbox`),
        );
      }
      assert.deepEqual(readdirSync(path.join(env.dir, "state")).sort(), before, "no sandbox directory was left");
      const { items } = await env.runtime.listPodSandbox({}, QUICK);
      assert.deepEqual(
        items.map((p) => p.id),
        [pod.id],
        "containerd lists no refused pod",
      );
    }),
);

/** A host directory mounted shared (as on a systemd host) with a writable tmpfs submount at sub/. */
function hostVolume(name: string): string {
  const dir = path.join(env.dir, name);
  mkdirSync(path.join(dir, "sub"), { recursive: true });
  execFileSync("mount", ["--bind", dir, dir]);
  execFileSync("mount", ["--make-shared", dir]);
  execFileSync("mount", ["-t", "tmpfs", `${name}-sub`, path.join(dir, "sub")]);
  return dir;
}

/** Creates and starts a long-running container with the given CRI mounts; its id. */
async function withMounts(name: string, mounts: Array<MessageInitShape<typeof MountSchema>>): Promise<string> {
  const { containerId } = await env.runtime.createContainer(
    {
      podSandboxId: pod.id,
      config: containerConfig(name, "exec sleep 3600", { mounts }),
      sandboxConfig: pod.config,
    },
    SLOW,
  );
  await env.runtime.startContainer({ containerId }, SLOW);
  return containerId;
}

async function sh(containerId: string, script: string): Promise<{ out: string; code: number }> {
  const r = await env.runtime.execSync({ containerId, cmd: ["sh", "-c", script], timeout: 60n }, SLOW);
  return { out: Buffer.from(r.stdout).toString() + Buffer.from(r.stderr).toString(), code: r.exitCode };
}

async function removeContainer(containerId: string): Promise<void> {
  await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
  await env.runtime.removeContainer({ containerId }, QUICK);
}

test("mount propagation: host-to-container is honoured, bidirectional is refused by name", { timeout: 300_000 }, () =>
  withLogs(env, async () => {
    const vol = hostVolume("propagation");
    try {
      await assert.rejects(
        withMounts("bidi", [
          { containerPath: "/both", hostPath: vol, propagation: MountPropagation.PROPAGATION_BIDIRECTIONAL },
        ]),
        /mount \/both: Bidirectional propagation cannot be honoured in a VM sandbox/,
      );
      const id = await withMounts("slave", [
        { containerPath: "/from-host", hostPath: vol, propagation: MountPropagation.PROPAGATION_HOST_TO_CONTAINER },
      ]);
      // Mounted on the host after the container started: the container sees it.
      mkdirSync(path.join(vol, "later"));
      execFileSync("mount", ["-t", "tmpfs", "later", path.join(vol, "later")]);
      writeFileSync(path.join(vol, "later/file"), "mounted after start\n");
      assert.deepEqual(await sh(id, "cat /from-host/later/file"), { out: "mounted after start\n", code: 0 });
      await removeContainer(id);
    } finally {
      execFileSync("umount", ["-R", vol]);
    }
  }),
);

test(
  "a read-only bind keeps a writable submount writable, as CRI's non-recursive read-only says",
  { timeout: 300_000 },
  () =>
    withLogs(env, async () => {
      // recursive_read_only cannot be asked through containerd 2.1.9 for this runtime: containerd introspects the
      // mount features of io.containerd.runc.v2 runtimes only and then dereferences the missing ones (a nil-pointer
      // panic in internal/cri/opts/spec_linux_opts.go). test/vm/mounts.test.ts sends "rro" to the task API instead.
      const vol = hostVolume("readonly");
      try {
        const id = await withMounts("ro", [{ containerPath: "/ro", hostPath: vol, readonly: true }]);
        const touch = async (p: string) => (await sh(id, `touch ${p} 2>&1; echo $?`)).out.trim().split("\n").pop();
        assert.notEqual(await touch("/ro/top"), "0", "the bind itself is read-only");
        assert.equal(await touch("/ro/sub/file"), "0", "its writable submount stays writable");
        await removeContainer(id);
      } finally {
        execFileSync("umount", ["-R", vol]);
      }
    }),
);

test(
  "a RunPodSandbox given up early, midway and late in its boot leaves no VM, helper, mount, network namespace or directory",
  { timeout: 300_000 },
  () =>
    withLogs(env, async () => {
      const state = path.join(env.dir, "state");
      const footprint = () => ({
        dirs: readdirSync(state).sort(),
        processes: vmProcesses(state).length,
        mounts: mountsUnder(state).length,
        netns: readdirSync("/var/run/netns")
          .filter((n) => n.startsWith("cni-"))
          .sort(),
      });
      const before = footprint();
      // The deadlines are fractions of a boot timed here, so they fall inside the boot on a fast machine and a slow one.
      const t0 = Date.now();
      const timed = await env.runtime.runPodSandbox(
        { config: await podConfig(env, "cancel-timed"), runtimeHandler: RUNTIME_HANDLER },
        SLOW,
      );
      const bootMs = Date.now() - t0;
      await removePod(env, timed.podSandboxId);
      let cancelled = 0;
      for (const fraction of [0.2, 0.5, 0.8]) {
        const config = await podConfig(env, `cancel-${fraction * 10}`);
        const deadlineMs = Math.round(bootMs * fraction);
        const r = await env.runtime
          .runPodSandbox({ config, runtimeHandler: RUNTIME_HANDLER }, { deadlineMs })
          .catch((e: Error) => e);
        if (r instanceof Error) {
          assert.match(r.message, /DEADLINE_EXCEEDED|deadline|CANCELLED/i);
          cancelled++;
        } else {
          // A boot quicker than the deadline (an idle machine): the pod is removed as kubelet would.
          await removePod(env, r.podSandboxId);
        }
      }
      assert.ok(
        cancelled >= 2,
        `${cancelled} of 3 RunPodSandbox calls were given up before the pod was ready (a boot took ${bootMs} ms)`,
      );
      // A deadline that falls as the boot ends may still see containerd finish the pod: kubelet has no record of it
      // then, and its garbage collection stops and removes it, as here.
      for (const p of (await env.runtime.listPodSandbox({}, QUICK)).items) {
        if (p.id !== pod.id) await removePod(env, p.id);
      }
      const after = await until("everything of the given-up pods to be gone", 30_000, async () => {
        const now = footprint();
        return JSON.stringify(now) === JSON.stringify(before) ? now : undefined;
      }).catch(() => footprint());
      assert.deepEqual(after, before);
      const { items } = await env.runtime.listPodSandbox({}, QUICK);
      assert.deepEqual(
        items.map((p) => p.id),
        [pod.id],
      );
    }),
);

test("CRI PortForward reaches a server in the container, as kubectl port-forward does", { timeout: 300_000 }, () =>
  withLogs(env, async () => {
    const { containerId } = await env.runtime.createContainer(
      {
        podSandboxId: pod.id,
        // A persistent server: one line in, one line out per connection.
        config: containerConfig("server", `exec nc -ll -p 8080 -e sh -c 'read l; echo "got $l"'`),
        sandboxConfig: pod.config,
      },
      SLOW,
    );
    await env.runtime.startContainer({ containerId }, SLOW);
    // A URL is good for one connection; the server in the container may still be starting for the first.
    const forward = async (line: string) => {
      const { url } = await env.runtime.portForward({ podSandboxId: pod.id, port: [8080] }, QUICK);
      return portForwardOnce(url, 8080, line);
    };
    const first = await until("the server in the container to answer", 30_000, () =>
      forward("hello").then(
        (r) => (r.includes("got hello") ? r : undefined),
        () => undefined,
      ),
    );
    assert.match(first, /got hello/);
    assert.match(await forward("again"), /got again/);
    await removeContainer(containerId);
  }),
);

/**
 * One connection through containerd's streaming server, with the WebSocket port-forward protocol kubectl speaks
 * (v4.channel.k8s.io): each message starts with its channel (0 data, 1 error), and each channel opens with the port.
 */
function portForwardOnce(url: string, port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}?port=${port}`, ["v4.channel.k8s.io"]);
    const seen = { 0: 0, 1: 0 };
    let data = "";
    let error = "";
    const timer = setTimeout(() => ws.terminate(), 20_000);
    ws.on("message", (raw: Buffer) => {
      const channel = raw[0] ?? -1;
      const payload = raw.subarray(1);
      if (channel !== 0 && channel !== 1) return;
      // The first message of each channel is the port number.
      if (seen[channel]++ === 0) {
        if (channel === 0) ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(`${line}\n`)]));
        return;
      }
      if (channel === 0) data += payload.toString();
      else error += payload.toString();
      if (data.includes("\n")) ws.close();
    });
    ws.on("close", () => {
      clearTimeout(timer);
      if (data) resolve(data);
      else reject(new Error(`no answer through port-forward: ${error || "closed"}`));
    });
    ws.on("error", (e: Error) => reject(e));
  });
}
