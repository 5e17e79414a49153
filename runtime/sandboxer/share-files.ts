import { readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

/** The parts of CRI's PodSandboxConfig (protobuf JSON) the host acts on. */
export interface PodConfigJson {
  hostname?: string;
  metadata?: { name?: string; namespace?: string; uid?: string };
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  linux?: {
    cgroupParent?: string;
    sysctls?: Record<string, string>;
    /** kubelet's hint of the pod's total limits (LinuxContainerResources). */
    resources?: { cpuPeriod?: string | number; cpuQuota?: string | number; memoryLimitInBytes?: string | number };
  };
}

/**
 * Writes the pod's hostname, hosts and resolv.conf into the share as containerd writes them for a runc pod: the
 * pod's hostname (the host's when the pod sets none), a copy of the host's /etc/hosts, and resolv.conf from the
 * pod's dns_config (search, nameserver and options lines) or else a copy of the host's. The guest's /etc and every
 * container of the pod get them (runtime/contract/share.ts).
 */
export async function writeShareFiles(shareDir: string, pod: PodConfigJson | undefined): Promise<void> {
  await writeFile(path.join(shareDir, "hostname"), `${pod?.hostname || os.hostname()}\n`);
  await writeFile(path.join(shareDir, "hosts"), await readFile("/etc/hosts").catch(() => ""));
  const dns = pod?.dnsConfig;
  const resolv =
    dns?.servers?.length || dns?.searches?.length || dns?.options?.length
      ? [
          ...(dns.searches?.length ? [`search ${dns.searches.join(" ")}\n`] : []),
          ...(dns.servers ?? []).map((s) => `nameserver ${s}\n`),
          ...(dns.options?.length ? [`options ${dns.options.join(" ")}\n`] : []),
        ].join("")
      : await readFile("/etc/resolv.conf", "utf8").catch(() => "");
  await writeFile(path.join(shareDir, "resolv.conf"), resolv);
}
