import { readFile, writeFile } from "node:fs/promises";
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
 * Writes hostname, hosts and resolv.conf into the share; the guest binds them over its /etc. DNS comes from the
 * pod's dns_config, else the host's resolv.conf (what a runc pod with default DNS policy would see).
 */
export async function writeShareFiles(shareDir: string, id: string, pod: PodConfigJson | undefined): Promise<void> {
  const hostname = pod?.hostname || id.slice(0, 63);
  await writeFile(path.join(shareDir, "hostname"), `${hostname}\n`);
  await writeFile(
    path.join(shareDir, "hosts"),
    `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n`,
  );
  const dns = pod?.dnsConfig;
  let resolv: string;
  if (dns?.servers?.length || dns?.searches?.length || dns?.options?.length) {
    resolv = [
      ...(dns.searches?.length ? [`search ${dns.searches.join(" ")}`] : []),
      ...(dns.servers ?? []).map((s) => `nameserver ${s}`),
      ...(dns.options?.length ? [`options ${dns.options.join(" ")}`] : []),
    ].join("\n");
    resolv += "\n";
  } else {
    resolv = await readFile("/etc/resolv.conf", "utf8").catch(() => "");
  }
  await writeFile(path.join(shareDir, "resolv.conf"), resolv);
}
