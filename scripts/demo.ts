import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { ContainerState } from "../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { IMAGE, RUNTIME_HANDLER, startEnv } from "../testkit/containerd.ts";

// The main job: an unmodified containerd 2.1 (private root, state and sockets; the system one is never touched)
// drives vmm-sandboxer through CRI the way kubelet does, and one pod with one container runs in a QEMU VM.
const phases: Array<[string, number]> = [];
const t0 = performance.now();
let last = t0;
const phase = (name: string) => {
  const now = performance.now();
  phases.push([name, now - last]);
  console.log(`  ✔ ${name} (${((now - last) / 1000).toFixed(2)} s)`);
  last = now;
};
const SLOW = { deadlineMs: 180_000 };

async function main(): Promise<void> {
  console.log("starting a private containerd 2.1 and vmm-sandboxer, importing a busybox image ...");
  const env = await startEnv();
  try {
    phase(`containerd and vmm-sandboxer started in ${env.dir}`);
    const logDirectory = path.join(env.dir, "pods", "demo");
    await mkdir(logDirectory, { recursive: true });
    const config = {
      metadata: { name: "demo", namespace: "default", uid: "demo-uid", attempt: 0 },
      hostname: "demo-pod",
      logDirectory,
    };
    const { podSandboxId } = await env.runtime.runPodSandbox({ config, runtimeHandler: RUNTIME_HANDLER }, SLOW);
    const qemu = env.daemon.log().match(/vmm pid (\d+) started/)?.[1];
    phase(`RunPodSandbox: VM booted, agent ready (QEMU pid ${qemu}, pod ${podSandboxId.slice(0, 12)})`);
    const script = 'echo "hello from a container in a VM: kernel $(uname -r), hostname $(hostname)"';
    const { containerId } = await env.runtime.createContainer(
      {
        podSandboxId,
        config: {
          metadata: { name: "hello", attempt: 0 },
          image: { image: IMAGE },
          command: ["sh", "-c", script],
          logPath: "hello.log",
        },
        sandboxConfig: config,
      },
      SLOW,
    );
    phase("CreateContainer");
    await env.runtime.startContainer({ containerId }, SLOW);
    phase("StartContainer");
    for (let i = 0; ; i++) {
      const { status } = await env.runtime.containerStatus({ containerId }, SLOW);
      if (status?.state === ContainerState.CONTAINER_EXITED) {
        phase(`container exited with status ${status.exitCode}`);
        break;
      }
      if (i > 600) throw new Error("the container did not exit within 60 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    const log = readFileSync(path.join(logDirectory, "hello.log"), "utf8").trim();
    console.log(`\n  CRI log of the container (${path.join(logDirectory, "hello.log")}):\n    ${log}\n`);
    await env.runtime.removeContainer({ containerId }, SLOW);
    await env.runtime.stopPodSandbox({ podSandboxId }, SLOW);
    await env.runtime.removePodSandbox({ podSandboxId }, SLOW);
    phase("pod stopped and removed (VM gone)");
    const total = (performance.now() - t0) / 1000;
    console.log("phase timings:");
    for (const [name, ms] of phases) console.log(`  ${(ms / 1000).toFixed(2).padStart(7)} s  ${name}`);
    console.log(`  ${total.toFixed(2).padStart(7)} s  total`);
  } catch (err) {
    console.error(env.logs(40));
    throw err;
  } finally {
    await env.teardown();
  }
}

main().catch((err: Error) => {
  console.error(`demo failed: ${err.message}`);
  process.exit(1);
});
