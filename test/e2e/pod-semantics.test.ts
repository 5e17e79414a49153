import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import type { OciSpec } from "../../runtime/contract/oci.ts";
import { NamespaceMode } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { type Env, startEnv } from "../../testkit/containerd.ts";
import { containerConfig, type PodConfig, QUICK, removePod, runPod, SLOW, withLogs } from "../../testkit/cri.ts";

// Kubernetes pod semantics inside the VM, through containerd 2.1's CRI as kubelet drives it: a shared PID namespace
// (shareProcessNamespace), one /dev/shm for the pod, and memory-medium emptyDir volumes as tmpfs in the guest.
let env: Env;
/** A memory emptyDir as kubelet makes it: a tmpfs at <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>. */
let emptyDir: string;
const EMPTY_DIR_MB = 16;

before(async () => {
  env = await startEnv();
  emptyDir = path.join(env.dir, "kubelet/pods/shared-uid/volumes/kubernetes.io~empty-dir/cache");
  mkdirSync(emptyDir, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${EMPTY_DIR_MB}m,mode=0777`, "tmpfs", emptyDir]);
});

after(async () => {
  await env?.teardown();
});

/** kubelet writes the pod's PID namespace mode into the pod's and every container's security context. */
const pidMode = (pid: NamespaceMode) => ({ linux: { securityContext: { namespaceOptions: { pid } } } });

/** A pod of two long-running busybox containers, a and b, both mounting the memory emptyDir at /cache. */
async function twoContainerPod(name: string, pid: NamespaceMode) {
  const pod = await runPod(env, name, pidMode(pid));
  const ids: Record<"a" | "b", string> = { a: "", b: "" };
  for (const c of ["a", "b"] as const) {
    const { containerId } = await env.runtime.createContainer(
      {
        podSandboxId: pod.id,
        config: containerConfig(c, `exec sleep 360${c === "a" ? 1 : 2}`, {
          ...pidMode(pid),
          mounts: [{ containerPath: "/cache", hostPath: emptyDir }],
        }),
        sandboxConfig: pod.config as PodConfig,
      },
      SLOW,
    );
    await env.runtime.startContainer({ containerId }, SLOW);
    ids[c] = containerId;
  }
  return { id: pod.id, config: pod.config, ...ids };
}

async function sh(containerId: string, script: string): Promise<string> {
  const r = await env.runtime.execSync({ containerId, cmd: ["sh", "-c", script], timeout: 60n }, SLOW);
  const out = Buffer.from(r.stdout).toString();
  assert.equal(r.exitCode, 0, `${script}: exit ${r.exitCode}: ${out}${Buffer.from(r.stderr).toString()}`);
  return out;
}

/** The spec containerd wrote for a container (its bundle in containerd's state), before the daemon translated it. */
function containerdSpec(containerId: string): OciSpec {
  const state = path.join(env.dir, "containerd/state");
  const find = (dir: string): string | undefined => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (e.name === containerId && existsSync(path.join(p, "config.json"))) return path.join(p, "config.json");
      const found = find(p);
      if (found) return found;
    }
    return undefined;
  };
  const file = find(state);
  assert.ok(file, `no bundle of ${containerId} under ${state}`);
  return JSON.parse(readFileSync(file, "utf8")) as OciSpec;
}

test(
  "shareProcessNamespace: with pid = POD the pod's containers see each other's processes, with CONTAINER they do not; TARGET joins the target's",
  { timeout: 600_000 },
  () =>
    withLogs(env, async () => {
      const shared = await twoContainerPod("pid-pod", NamespaceMode.POD);
      const { items } = await env.runtime.listPodSandbox({ filter: { id: shared.id } }, QUICK);
      assert.equal(items.length, 1);
      // What containerd 2.1 sends: the sandbox's pid (the VMM's, on the host) for POD, no path for CONTAINER.
      const podNs = containerdSpec(shared.a).linux?.namespaces?.find((n) => n.type === "pid");
      assert.match(podNs?.path ?? "", /^\/proc\/\d+\/ns\/pid$/);
      const seen = await sh(shared.b, "ps -o pid,args");
      assert.match(seen, /^\s*1 \/bin\/sleep infinity$/m, "the pod's init is PID 1");
      assert.match(seen, /^\s*\d+ sleep 3601$/m, "b sees a's process");
      assert.match(await sh(shared.a, "ps -o args"), /^sleep 3602$/m, "a sees b's");
      await removePod(env, shared.id);

      const own = await twoContainerPod("pid-container", NamespaceMode.CONTAINER);
      assert.deepEqual(
        containerdSpec(own.a).linux?.namespaces?.find((n) => n.type === "pid"),
        { type: "pid" },
      );
      const alone = await sh(own.b, "ps -o pid,args");
      assert.match(alone, /^\s*1 sleep 3602$/m, "b's own process is its PID 1");
      assert.doesNotMatch(alone, /sleep 3601|infinity/, "and it sees nothing of a");

      // kubectl debug --target=a: containerd writes a's pid (the guest's, as the agent reported it) for TARGET.
      const { containerId: debug } = await env.runtime.createContainer(
        {
          podSandboxId: own.id,
          config: containerConfig("debug", "exec sleep 3603", {
            linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.TARGET, targetId: own.a } } },
          }),
          sandboxConfig: own.config,
        },
        SLOW,
      );
      await env.runtime.startContainer({ containerId: debug }, SLOW);
      const targeted = await sh(debug, "ps -o pid,args");
      assert.match(targeted, /^\s*1 sleep 3601$/m, "the debug container is in a's PID namespace");
      assert.match(targeted, /^\s*\d+ sleep 3603$/m);
      assert.doesNotMatch(targeted, /sleep 3602/, "and not in b's");
      await removePod(env, own.id);
    }),
);

test(
  "one /dev/shm for the pod and a memory emptyDir as a tmpfs in the guest, shared by its containers; the host's stays empty",
  { timeout: 600_000 },
  () =>
    withLogs(env, async () => {
      const pod = await twoContainerPod("shm-pod", NamespaceMode.CONTAINER);
      // What containerd 2.1 sends for /dev/shm in a sandboxed pod: its default spec's 64 MiB tmpfs, one per container
      // (it binds a pod-wide shm directory only for its own pod sandboxes).
      const shmMount = containerdSpec(pod.a).mounts?.find((m) => m.destination === "/dev/shm");
      assert.equal(shmMount?.type, "tmpfs");
      assert.ok(shmMount?.options?.includes("size=65536k"), JSON.stringify(shmMount));

      // POSIX shared memory is files in /dev/shm: a segment one container creates the other opens.
      await sh(pod.a, "echo segment-from-a > /dev/shm/kuasar-seg; echo cached-by-a > /cache/file");
      assert.equal(await sh(pod.b, "cat /dev/shm/kuasar-seg"), "segment-from-a\n");
      assert.equal(await sh(pod.b, "cat /cache/file"), "cached-by-a\n");

      const mounts = await sh(pod.b, "cat /proc/mounts");
      assert.match(mounts, /^\S+ \/dev\/shm tmpfs \S*size=65536k/m, "the pod's shm, 64 MiB");
      assert.match(mounts, new RegExp(`^\\S+ /cache tmpfs \\S*size=${EMPTY_DIR_MB * 1024}k`, "m"), "a guest tmpfs");
      assert.deepEqual(readdirSync(emptyDir), [], "nothing reached the host's tmpfs");
      await removePod(env, pod.id);
    }),
);

test(
  "UpdateContainerResources raising a container to 1 CPU and 256 MiB grows the pod's VM from 1 to 2 vCPUs and by 256 MiB, seen in the container",
  { timeout: 600_000 },
  () =>
    withLogs(env, async () => {
      const pod = await twoContainerPod("resize-pod", NamespaceMode.CONTAINER);
      const memTotalKiB = async () => Number(/^MemTotal:\s+(\d+) kB$/m.exec(await sh(pod.a, "cat /proc/meminfo"))?.[1]);
      assert.equal((await sh(pod.a, "nproc")).trim(), "1", "the pod sets no limits: the configured 1 vCPU");
      const before = await memTotalKiB();
      // What kubelet sends for an in-place resize: the container's whole new limits.
      await env.runtime.updateContainerResources(
        {
          containerId: pod.a,
          linux: { cpuPeriod: 100_000n, cpuQuota: 100_000n, memoryLimitInBytes: BigInt(256 * 1024 * 1024) },
        },
        SLOW,
      );
      assert.equal((await sh(pod.a, "nproc")).trim(), "2");
      assert.equal(
        (await sh(pod.b, "grep -c ^processor /proc/cpuinfo")).trim(),
        "2",
        "the other container sees it too",
      );
      const grown = (await memTotalKiB()) - before;
      assert.ok(grown >= 255 * 1024 && grown <= 257 * 1024, `MemTotal grew by ${grown} KiB, not 256 MiB`);
      // Lowering is deferred: the VM keeps its vCPUs and memory; the guest's runc applies the lower limits.
      await env.runtime.updateContainerResources(
        {
          containerId: pod.a,
          linux: { cpuPeriod: 100_000n, cpuQuota: 50_000n, memoryLimitInBytes: BigInt(128 * 1024 * 1024) },
        },
        SLOW,
      );
      assert.equal((await sh(pod.a, "nproc")).trim(), "2");
      assert.equal((await memTotalKiB()) - before, grown);
      await removePod(env, pod.id);
    }),
);
