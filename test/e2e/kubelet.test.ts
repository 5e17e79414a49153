import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { containerConfig, logLines, QUICK, removePod, runPod, SLOW, withLogs } from "./cri.ts";
import { type Env, startEnv } from "./harness.ts";

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

/** Runs script in a new container of the shared pod and returns its stdout lines once it printed `end`. */
async function run(name: string, script: string, extra: Record<string, unknown> = {}): Promise<string[]> {
  const { containerId } = await env.runtime.createContainer(
    {
      podSandboxId: pod.id,
      config: { ...containerConfig(name, `${script}; echo end`), ...extra },
      sandboxConfig: pod.config,
    },
    SLOW,
  );
  await env.runtime.startContainer({ containerId }, SLOW);
  const lines = await logLines(path.join(pod.config.logDirectory as string, `${name}.log`), /stdout F end$/m);
  await env.runtime.stopContainer({ containerId, timeout: 2n }, SLOW);
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
