import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseCmdline } from "../contract/kernel-params.ts";
import { ConfigError, loadConfig } from "../sandboxer/config/load.ts";
import { type Config, defaultConfig } from "../sandboxer/config/schema.ts";
import { virtiofsd } from "../sandboxer/hypervisor/guest.ts";
import { chooseVsock, virtiofsdDialect } from "../sandboxer/hypervisor/host.ts";
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

const INSTALL_HINT: Record<Config["hypervisor"]["type"], string> = {
  qemu: "apt-get install qemu-system-x86",
  "cloud-hypervisor": "install cloud-hypervisor from its GitHub releases",
  stratovirt: "install StratoVirt (openEuler packages it)",
};

/** The hypervisor binary runs, its version, and (QEMU) the devices the chosen transports need. */
export async function checkHypervisor(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  const h = config.hypervisor;
  const binary = h.type === "qemu" ? h.qemu_path : h.path;
  const key = h.type === "qemu" ? "qemu_path" : "path";
  if (!binary || !(await probes.executable(binary))) {
    return {
      id: "hypervisor",
      status: "fail",
      verdict: `hypervisor.${key} = ${JSON.stringify(binary)}: no executable there (hypervisor ${h.type})`,
      fix: `${INSTALL_HINT[h.type]}, or set hypervisor.${key} in ${config.file ?? "the configuration"}`,
    };
  }
  const v = await probes.run(binary, ["--version"]);
  if (!v.ok) {
    return {
      id: "hypervisor",
      status: "fail",
      verdict: `${binary} does not run: ${v.error}`,
      fix: `reinstall it (${INSTALL_HINT[h.type]})`,
    };
  }
  const version =
    v.output
      .split("\n")
      .find((l) => /\d+\.\d+/.test(l))
      ?.trim() ?? "version unknown";
  if (h.type !== "qemu") return { id: "hypervisor", status: "ok", verdict: `${binary}: ${version}` };

  // QEMU builds differ in the devices they carry: ask for the ones this configuration will use.
  const micro = h.machine_type === "microvm";
  const dev = (name: string) => (micro ? `${name}-device` : `${name}-pci`);
  const wanted = [dev(h.share_fs === "VirtioFS" ? "vhost-user-fs" : "virtio-9p")];
  const vsock = await chooseVsock(h.vsock_mode, h.vhost_user_vsock_path, probes).catch(() => undefined);
  if (vsock) wanted.push(dev(vsock.value === "hybrid" ? "vhost-user-vsock" : "vhost-vsock"));
  const help = await probes.run(binary, ["-machine", "none", "-device", "help"]);
  const listed = help.ok ? help.output : "";
  const missing = wanted.filter((d) => !listed.includes(`"${d}"`));
  if (missing.length > 0) {
    return {
      id: "hypervisor",
      status: "fail",
      verdict: `${binary} (${version}) lacks the device${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`,
      fix: "use a QEMU built with vhost-user and virtfs support (Debian's qemu-system-x86 has both)",
    };
  }
  return { id: "hypervisor", status: "ok", verdict: `${binary}: ${version}; has ${wanted.join(", ")}` };
}

/** virtiofsd where the share goes over virtio-fs, with flags this configuration can pass it. */
export async function checkVirtiofsd(config: Config, probes: DoctorProbes): Promise<CheckResult> {
  const h = config.hypervisor;
  if (h.type === "qemu" && h.share_fs !== "VirtioFS") {
    return { id: "virtiofsd", status: "skip", verdict: "not used: share_fs = Virtio9P (QEMU serves 9p itself)" };
  }
  const [key, binary] =
    h.type === "stratovirt"
      ? ["hypervisor.virtiofsd_conf.path", h.virtiofsd_conf.path]
      : ["hypervisor.virtiofsd.path", h.virtiofsd.path];
  if (!(await probes.executable(binary))) {
    return {
      id: "virtiofsd",
      status: "fail",
      verdict: `${key} = ${binary}: no executable there`,
      fix:
        h.type === "stratovirt"
          ? `install StratoVirt's vhost_user_fs or set ${key}`
          : `apt-get install qemu-system-common (C virtiofsd at /usr/lib/qemu/virtiofsd) or install the Rust virtiofsd; or set ${key}`,
    };
  }
  if (h.type === "stratovirt") return { id: "virtiofsd", status: "ok", verdict: `${binary} (vhost_user_fs)` };
  try {
    const dialect = await virtiofsdDialect(binary, probes);
    // Builds the real command line: options one implementation lacks fail here as they would at sandbox start.
    virtiofsd(config, { id: "doctor", dir: "/nonexistent", shareDir: "/nonexistent", netDevices: [] }, dialect);
    return {
      id: "virtiofsd",
      status: "ok",
      verdict: `${binary}: ${dialect === "c" ? "QEMU's C virtiofsd" : "the Rust virtiofsd"}`,
    };
  } catch (err) {
    return {
      id: "virtiofsd",
      status: "fail",
      verdict: (err as Error).message,
      fix: `fix [hypervisor.virtiofsd] in ${config.file ?? "the configuration"}`,
    };
  }
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
