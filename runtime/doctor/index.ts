import { vmmOf } from "../sandboxer/hypervisor/registry.ts";
import { checkContainerdConfig, checkContainerdVersion, checkShim } from "./containerd.ts";
import { checkCgroup, checkHostKernel, checkKvm, checkPortForward, checkVsock } from "./host.ts";
import { checkDaemon, checkPaths } from "./paths.ts";
import { type DoctorProbes, realDoctorProbes } from "./probes.ts";
import { type CheckResult, type Report, summarize } from "./report.ts";
import { checkArtifact, checkConfig, checkHypervisor, checkVirtiofsd } from "./vmm.ts";

export interface DoctorOptions {
  /** The daemon's --config, and whether it was given (a missing default file means built-in defaults). */
  config: string;
  configExplicit: boolean;
  /** The daemon's --dir and --listen. */
  dir: string;
  listen: string;
  /** containerd's main config file. */
  containerdConfig: string;
}

/** Every check, in the order an operator fixes things: the host, the VMM and guest, containerd, the service. */
export async function runDoctor(opts: DoctorOptions, probes: DoctorProbes = realDoctorProbes): Promise<Report> {
  const checks: CheckResult[] = [];
  const loaded = await checkConfig(opts.config, opts.configExplicit);
  checks.push(loaded.result, checkHostKernel(probes));
  const config = loaded.config;
  const needConfig = ["kvm", "vsock", "hypervisor", "virtiofsd", "guest-kernel", "guest-rootfs"];
  if (config) {
    const h = config.hypervisor;
    checks.push(
      await checkKvm(config, probes),
      await checkVsock(config, probes),
      await checkHypervisor(config, probes),
      await checkVirtiofsd(config, probes),
      await checkArtifact(config, "guest-kernel", "kernel_path"),
      await checkArtifact(config, "guest-rootfs", h.image_path ? "image_path" : "initrd_path"),
    );
    const firmware = vmmOf(h.type).firmwareKey;
    if ((h as unknown as Record<string, string>)[firmware])
      checks.push(await checkArtifact(config, "firmware", firmware));
  } else {
    for (const id of needConfig) {
      checks.push({ id, status: "skip", verdict: "not checked: the configuration did not load" });
    }
  }
  checks.push(await checkContainerdVersion(probes));
  const cc = await checkContainerdConfig(opts.containerdConfig, opts.listen);
  checks.push(cc.result, await checkShim(cc.runtimeType, probes));
  checks.push(
    await checkCgroup(probes),
    await checkPortForward(probes),
    await checkPaths(opts.listen, opts.dir, probes),
  );
  checks.push(await checkDaemon(opts.listen, probes));
  return summarize(checks);
}
