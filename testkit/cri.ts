import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type ContainerConfigSchema,
  ContainerState,
  type ContainerStatus,
  type PodSandboxConfigSchema,
} from "../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { type Env, IMAGE, mountsUnder, RUNTIME_HANDLER, vmProcesses } from "./containerd.ts";

// CRI calls as kubelet makes them, shared by the e2e test files. TCG boots take ~15-20 s, so calls that boot or stop
// a VM get generous deadlines.
export const SLOW = { deadlineMs: 120_000 };
export const QUICK = { deadlineMs: 30_000 };

export type PodConfig = MessageInitShape<typeof PodSandboxConfigSchema>;
/** Fields of a PodSandboxConfig (protobuf-es init shape) that replace podConfig's defaults. */
export type PodExtra = Record<string, unknown>;

/** Runs body; on failure the error carries containerd's and the daemon's log tails. */
export async function withLogs(env: Env, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    // The reporter prints the stack, which was captured with the original message.
    const e = err as Error;
    e.stack = `${e.stack}\n${env.logs()}`;
    throw e;
  }
}

/**
 * A pod named name on the run's CNI bridge (a VM pod cannot share the host's network namespace); extra is merged in
 * (dns_config, port mappings, namespace options).
 */
export async function podConfig(env: Env, name: string, extra: PodExtra = {}): Promise<PodConfig> {
  const logDirectory = path.join(env.dir, "pods", name);
  await mkdir(logDirectory, { recursive: true });
  return {
    metadata: { name, namespace: "e2e", uid: `${name}-uid`, attempt: 0 },
    hostname: name,
    logDirectory,
    ...extra,
  } as PodConfig;
}

/** A busybox container running `sh -c script`; extra fields (mounts, linux) are merged in. */
export function containerConfig(
  name: string,
  script: string,
  extra: Record<string, unknown> = {},
): MessageInitShape<typeof ContainerConfigSchema> {
  return {
    metadata: { name, attempt: 0 },
    image: { image: IMAGE },
    command: ["sh", "-c", script],
    logPath: `${name}.log`,
    ...extra,
  } as MessageInitShape<typeof ContainerConfigSchema>;
}

export async function runPod(env: Env, name: string, extra: PodExtra = {}) {
  const config = await podConfig(env, name, extra);
  const { podSandboxId } = await env.runtime.runPodSandbox({ config, runtimeHandler: RUNTIME_HANDLER }, SLOW);
  return { id: podSandboxId, config };
}

export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * The container's CRI status once CRI reports it exited: after its process ends, or after containerd notices a dropped
 * task connection, which may come a moment later.
 */
export async function untilExited(env: Env, containerId: string, what: string, ms = 60_000): Promise<ContainerStatus> {
  return until(what, ms, async () => {
    const { status } = await env.runtime.containerStatus({ containerId }, QUICK);
    return status?.state === ContainerState.CONTAINER_EXITED ? status : undefined;
  });
}

/** The text lines of a container's CRI log ("<time> <stream> <P|F> <text>"), once it holds `want`. */
export async function logLines(logFile: string, want: RegExp, ms = 30_000): Promise<string[]> {
  const text = await until(`${want} in ${logFile}`, ms, async () => {
    const t = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
    return want.test(t) ? t : undefined;
  });
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ").slice(3).join(" "));
}

/** Removes the pod the way kubelet does and checks its VM and mounts are gone. */
export async function removePod(env: Env, id: string): Promise<void> {
  await env.runtime.stopPodSandbox({ podSandboxId: id }, SLOW);
  await env.runtime.removePodSandbox({ podSandboxId: id }, SLOW);
  const { items } = await env.runtime.listPodSandbox({ filter: { id } }, QUICK);
  assert.deepEqual(items, [], "the pod is no longer listed");
  const dir = env.sandboxDir(id);
  await until("the VM's processes to exit", 10_000, async () => (vmProcesses(dir).length ? undefined : true));
  assert.equal(existsSync(dir), false, "the daemon removed the sandbox directory");
  assert.deepEqual(mountsUnder(dir), [], "no mounts left under the sandbox directory");
}
