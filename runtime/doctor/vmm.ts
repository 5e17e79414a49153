import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseCmdline } from "../contract/kernel-params.ts";
import { ConfigError, loadConfig } from "../sandboxer/config/load.ts";
import { type Config, defaultConfig } from "../sandboxer/config/schema.ts";
import { vmmOf } from "../sandboxer/hypervisor/registry.ts";
import type { DoctorProbes } from "./probes.ts";
import type { CheckResult } from "./report.ts";

const CONFIG_DOCS = "every key, its type and default are in docs/configuration.md";

/** Loads the configuration as the daemon does: a missing default file means the built-in QEMU defaults. */
export async function checkConfig(
  file: string,
  explicit: boolean,
): Promise<{ result: CheckResult; config: Config | undefined }> {
  if (!explicit && !existsSync(file)) {
    return {
      config: defaultConfig("qemu"),
      result: {
        id: "config",
        status: "warn",
        verdict: `${file} does not exist; the daemon runs with the built-in QEMU defaults`,
        fix: "make install-vmm writes one (from installers/config/config_<hypervisor>.toml), or pass --config",
      },
    };
  }
  try {
    const { config, warnings } = await loadConfig(file);
    const h = config.hypervisor;
    // The debug console is a root shell without authentication: worth seeing in every report. The guest reads
    // task.debug from the command line, where kernel_params come after the generated parameter.
    const debug = parseCmdline(`${h.task.debug ? "task.debug " : ""}${h.kernel_params}`).debug
      ? "; debug console on (vsock port 1025)"
      : "";
    const summary = `${file}: ${h.type}, ${h.vcpus} vCPU, ${h.memory_in_mb} MiB, ${h.image_path ? "image" : "initrd"} root${debug}`;
    if (warnings.length > 0) {
      return {
        config,
        result: {
          id: "config",
          status: "warn",
          verdict: `${summary}; ${warnings.map((w) => w.replace(`${file}: `, "")).join("; ")}`,
          fix: `edit ${file}: ${CONFIG_DOCS}`,
        },
      };
    }
    return { config, result: { id: "config", status: "ok", verdict: summary } };
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
    return {
      config: undefined,
      result: {
        id: "config",
        status: "fail",
        verdict: `${file}: ${problems.join("; ")}`,
        fix: `fix ${file} (the daemon refuses to start with it): ${CONFIG_DOCS}`,
      },
    };
  }
}

/** The hypervisor binary runs, its version, and what else the VMM needs of that build (QEMU: devices). */
export async function checkHypervisor(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  const h = config.hypervisor;
  const vmm = vmmOf(h.type);
  const key = vmm.binaryKey;
  const binary = (h as unknown as Record<string, string>)[key] ?? "";
  const hint = vmm.doctor.installHint;
  if (!binary || !(await probes.executable(binary))) {
    return {
      id: "hypervisor",
      status: "fail",
      verdict: `hypervisor.${key} = ${JSON.stringify(binary)}: no executable there (hypervisor ${h.type})`,
      fix: `${hint}, or set hypervisor.${key} in ${config.file ?? "the configuration"}`,
    };
  }
  const v = await probes.run(binary, ["--version"]);
  if (!v.ok) {
    return {
      id: "hypervisor",
      status: "fail",
      verdict: `${binary} does not run: ${v.error}`,
      fix: `reinstall it (${hint})`,
    };
  }
  const version =
    v.output
      .split("\n")
      .find((l) => /\d+\.\d+/.test(l))
      ?.trim() ?? "version unknown";
  const more = await vmm.doctor.binary?.(config, probes, binary, version);
  return { id: "hypervisor", ...(more ?? { status: "ok", verdict: `${binary}: ${version}` }) };
}

/** The helper that serves the share (virtiofsd, StratoVirt's vhost_user_fs), where the VMM needs one. */
export async function checkVirtiofsd(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  return { id: "virtiofsd", ...(await vmmOf(config.hypervisor.type).doctor.shareFs(config, probes)) };
}

interface Described {
  manifest: string;
  size: number;
  sha256: string;
  /** What the manifest says the artifact is, for the verdict. */
  about: string;
  /** Hypervisors a kernel was built for. */
  hypervisors?: string[];
}

/**
 * The manifest the pipeline wrote for this file: <file>.manifest.json (image, initrd), <stem>.manifest.json or the
 * kernel stage's vmlinux.manifest.json, which lists vmlinux.bin and bzImage.
 */
async function findManifest(file: string): Promise<Described | undefined> {
  const dir = path.dirname(file);
  const name = path.basename(file);
  const stem = name.replace(/\.[^.]+$/, "");
  const candidates = [
    `${file}.manifest.json`,
    path.join(dir, `${stem}.manifest.json`),
    path.join(dir, "vmlinux.manifest.json"),
  ];
  for (const m of new Set(candidates)) {
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(await readFile(m, "utf8")) as Record<string, unknown>;
    } catch {
      continue;
    }
    const artifacts = doc.artifacts as Record<string, { size: number; sha256: string }> | undefined;
    const artifact = doc.artifact as { name: string; size: number; sha256: string; format?: string } | undefined;
    if (artifacts?.[name]) {
      const profile = doc.profile ? ` (${doc.profile} profile)` : "";
      return {
        manifest: m,
        ...artifacts[name],
        about: `Linux ${doc.kernelVersion ?? "?"}${profile}`,
        hypervisors: doc.hypervisors as string[] | undefined,
      };
    }
    if (artifact?.name === name) {
      const c = (doc.components ?? {}) as Record<string, string>;
      const parts = [artifact.format, c.runc, c.node && `node ${c.node}`].filter(Boolean);
      return { manifest: m, size: artifact.size, sha256: artifact.sha256, about: parts.join(", ") };
    }
  }
  return undefined;
}

function sha256Of(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

/** A guest artifact the configuration names: it exists, and matches the manifest the pipeline wrote beside it. */
export async function checkArtifact(config: Config, id: string, key: string): Promise<CheckResult> {
  const file = (config.hypervisor as unknown as Record<string, string>)[key] ?? "";
  const where = config.file ?? "the configuration";
  const st = await stat(file).catch(() => undefined);
  if (!st?.isFile()) {
    return {
      id,
      status: "fail",
      verdict: `hypervisor.${key} = ${file}: ${st ? "not a regular file" : "does not exist"}`,
      fix: `build the guest (make bin/vmlinux.bin bin/kuasar.img bin/kuasar.initrd) and run make install-vmm, or fix hypervisor.${key} in ${where}`,
    };
  }
  const m = await findManifest(file);
  if (!m) return { id, status: "ok", verdict: `${file} (${st.size} bytes; no manifest beside it to verify against)` };
  const rebuild = `rebuild and reinstall it (make all && make install-vmm), or restore the file ${m.manifest} describes`;
  if (st.size !== m.size) {
    return {
      id,
      status: "fail",
      verdict: `${file} is ${st.size} bytes, ${m.manifest} says ${m.size}: not the artifact that was built`,
      fix: rebuild,
    };
  }
  const digest = await sha256Of(file);
  if (digest !== m.sha256) {
    return {
      id,
      status: "fail",
      verdict: `${file} has sha256 ${digest.slice(0, 12)}…, ${m.manifest} says ${m.sha256.slice(0, 12)}…`,
      fix: rebuild,
    };
  }
  const hv = config.hypervisor.type;
  if (m.hypervisors && !m.hypervisors.includes(hv)) {
    return {
      id,
      status: "warn",
      verdict: `${file}: ${m.about}, built for ${m.hypervisors.join(", ")}, not ${hv}`,
      fix: `rebuild the kernel for it (node pipeline/bin/kuasar-build.js kernel --hypervisor ${hv}) and reinstall it`,
    };
  }
  return { id, status: "ok", verdict: `${file}: ${m.about}; matches ${path.basename(m.manifest)}` };
}
