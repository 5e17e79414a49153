import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  checkContainerdConfig,
  checkContainerdVersion,
  checkShim,
  shimBinary,
} from "../../../runtime/doctor/containerd.ts";
import { checkCgroup, checkHostKernel, checkKvm, checkPortForward, checkVsock } from "../../../runtime/doctor/host.ts";
import { checkDaemon, checkPaths } from "../../../runtime/doctor/paths.ts";
import type { DoctorProbes, RunResult } from "../../../runtime/doctor/probes.ts";
import { exitCode, formatText, summarize } from "../../../runtime/doctor/report.ts";
import { checkArtifact, checkConfig, checkHypervisor, checkVirtiofsd } from "../../../runtime/doctor/vmm.ts";
import { parseConfig } from "../../../runtime/sandboxer/config/load.ts";
import { type Config, defaultConfig } from "../../../runtime/sandboxer/config/schema.ts";

/** A host described by its files, devices, modules and programs; anything not listed is absent. */
function host(h: {
  release?: string;
  files?: Record<string, string>;
  devices?: Record<string, true | string>;
  modules?: string[];
  programs?: Record<string, string | ((args: string[]) => string)>;
  writable?: string[];
}): DoctorProbes {
  const files = h.files ?? {};
  const programs = h.programs ?? {};
  return {
    kernelRelease: () => h.release ?? "6.1.0-18-amd64",
    readText: async (p) => files[p],
    async run(file, args): Promise<RunResult> {
      const p = programs[file];
      if (p === undefined) return { ok: false, error: `spawn ${file} ENOENT` };
      return { ok: true, output: typeof p === "string" ? p : p(args) };
    },
    writableDir: async (p) => (h.writable ?? []).includes(p),
    which: async (name) => Object.keys(programs).find((p) => path.basename(p) === name),
    async openRw(p) {
      const d = h.devices?.[p];
      return d === true ? { ok: true } : { ok: false, error: d ?? `ENOENT: no such file or directory, open '${p}'` };
    },
    exists: async (p) => p in (h.devices ?? {}) || p in files || p in programs || (h.writable ?? []).includes(p),
    modules: async () => new Set(h.modules ?? []),
    hostMemMiB: () => 8192,
    helpText: async (p) => {
      const prog = programs[p];
      return typeof prog === "function" ? prog(["--help"]) : (prog ?? "");
    },
    fileSize: async () => 0,
    readHead: async () => Buffer.alloc(0),
    isBlockDevice: async () => false,
    executable: async (p) => p in programs,
  };
}

const qemu = (extra = ""): Config =>
  parseConfig(`[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\n${extra}`, "c.toml").config;

const QEMU_DEVICES = [
  'name "virtio-9p-pci", bus PCI',
  'name "vhost-user-fs-pci", bus PCI',
  'name "vhost-user-vsock-pci", bus PCI',
  'name "vhost-vsock-pci", bus PCI',
].join("\n");
const qemuBinary =
  (devices = QEMU_DEVICES) =>
  (args: string[]) =>
    args.includes("help") ? devices : "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright";

describe("host", () => {
  test("host kernel: 4.8 and newer pass", () => {
    assert.equal(checkHostKernel(host({ release: "6.1.0-18-amd64" })).status, "ok");
    assert.equal(checkHostKernel(host({ release: "4.8.0" })).status, "ok");
    const old = checkHostKernel(host({ release: "4.4.0-210-generic" }));
    assert.equal(old.status, "fail");
    assert.match(old.verdict, /4\.4\.0-210-generic is older than 4\.8/);
  });

  test("kvm: usable, only TCG (and why), TCG on purpose, kvm demanded but absent", async () => {
    const kvmHost = host({ devices: { "/dev/kvm": true }, modules: ["kvm", "kvm_intel"] });
    assert.deepEqual(await checkKvm(qemu(), kvmHost), {
      id: "kvm",
      status: "ok",
      verdict: "KVM usable: /dev/kvm opens and kvm_intel is loaded",
    });
    // A /dev/kvm from a nested "PVM" module: guests hang under it, so only TCG is possible.
    const pvm = await checkKvm(qemu(), host({ devices: { "/dev/kvm": true }, modules: ["kvm", "kvm_pvm"] }));
    assert.equal(pvm.status, "warn");
    assert.match(pvm.verdict, /^only TCG .*neither kvm_intel nor kvm_amd is loaded \(kvm modules: kvm, kvm_pvm\)/);
    assert.match(pvm.fix!, /modprobe kvm_intel/);
    assert.equal((await checkKvm(qemu('machine_accelerators = "tcg"'), host({}))).status, "ok");
    const demanded = await checkKvm(qemu('machine_accelerators = "kvm"'), host({}));
    assert.equal(demanded.status, "fail");
    assert.match(demanded.verdict, /machine_accelerators = "kvm" but \/dev\/kvm cannot be opened/);
    const clh = parseConfig('[hypervisor]\npath = "/usr/local/bin/cloud-hypervisor"\n', "c.toml").config;
    const noKvm = await checkKvm(clh, host({}));
    assert.equal(noKvm.status, "fail");
    assert.match(noKvm.verdict, /^cloud-hypervisor needs KVM/);
  });

  test("vsock: vhost where the device exists, hybrid through the helper, neither", async () => {
    const helper = "/usr/bin/vhost-device-vsock";
    assert.match(
      (await checkVsock(qemu(), host({ devices: { "/dev/vhost-vsock": true } }))).verdict,
      /^vhost-vsock: \/dev\/vhost-vsock exists/,
    );
    const hybrid = await checkVsock(qemu(), host({ programs: { [helper]: "vhost-device-vsock 0.3.0\n" } }));
    assert.equal(hybrid.status, "ok");
    assert.match(hybrid.verdict, /^hybrid vsock through vhost-device-vsock 0\.3\.0/);
    const none = await checkVsock(qemu(), host({}));
    assert.equal(none.status, "fail");
    assert.match(none.verdict, /no vsock transport: \/dev\/vhost-vsock does not exist/);
    const sv = parseConfig('[hypervisor]\npath = "/usr/bin/stratovirt"\n', "c.toml").config;
    assert.equal((await checkVsock(sv, host({}))).status, "fail");
  });

  test("cgroup: v2 with controllers and Delegate=yes; v1, missing controllers, unit without delegation", async () => {
    const v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
    const unit = "/usr/lib/systemd/system/kuasar-vmm.service";
    const controllers = { "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n" };
    const good = await checkCgroup(
      host({ files: { "/proc/self/mounts": v2, ...controllers, [unit]: "[Service]\nDelegate=yes\n" } }),
    );
    assert.equal(good.status, "ok");
    assert.match(good.verdict, /Delegate=yes/);
    const hybrid = await checkCgroup(
      host({
        files: {
          "/proc/self/mounts":
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
        },
      }),
    );
    assert.equal(hybrid.status, "warn");
    assert.match(hybrid.verdict, /is tmpfs, not cgroup v2 .*cgroup2 only at \/sys\/fs\/cgroup\/unified/);
    const noPids = await checkCgroup(
      host({ files: { "/proc/self/mounts": v2, "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n" } }),
    );
    assert.match(noPids.verdict, /lacks the pids controller/);
    const overridden = await checkCgroup(
      host({
        files: {
          "/proc/self/mounts": v2,
          ...controllers,
          [unit]: "[Service]\nDelegate=yes\n",
          "/etc/systemd/system/kuasar-vmm.service.d/override.conf": "[Service]\nDelegate=no\n",
        },
      }),
    );
    assert.equal(overridden.status, "warn");
    assert.match(overridden.fix!, /Delegate=yes/);
  });
});

describe("hypervisor and guest", () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "doctor-"));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test("QEMU: version, and the devices the chosen transports need", async () => {
    const probes = (devices?: string) =>
      host({
        programs: { "/usr/bin/qemu-system-x86_64": qemuBinary(devices), "/usr/bin/vhost-device-vsock": "0.3.0" },
      });
    const ok = await checkHypervisor(qemu(), probes());
    assert.equal(ok.status, "ok");
    assert.equal(
      ok.verdict,
      "/usr/bin/qemu-system-x86_64: QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18); has virtio-9p-pci, vhost-user-vsock-pci",
    );
    const lacking = await checkHypervisor(qemu('share_fs = "VirtioFS"'), probes('name "virtio-9p-pci"'));
    assert.equal(lacking.status, "fail");
    assert.match(lacking.verdict, /lacks the devices vhost-user-fs-pci, vhost-user-vsock-pci$/);
    const missing = await checkHypervisor(qemu(), host({}));
    assert.equal(missing.status, "fail");
    assert.match(missing.verdict, /hypervisor\.qemu_path = "\/usr\/bin\/qemu-system-x86_64": no executable there/);
    assert.match(missing.fix!, /apt-get install qemu-system-x86/);
  });

  test("virtiofsd: skipped for 9p; the dialect; a cache policy the C one lacks", async () => {
    assert.equal((await checkVirtiofsd(qemu(), host({}))).status, "skip");
    const c = "/usr/lib/qemu/virtiofsd";
    const cHelp = host({ programs: { [c]: "usage: virtiofsd [options]\n    -o source=PATH" } });
    const fs = await checkVirtiofsd(qemu('share_fs = "VirtioFS"'), cHelp);
    assert.deepEqual(fs, { id: "virtiofsd", status: "ok", verdict: `${c}: QEMU's C virtiofsd` });
    const metadata = await checkVirtiofsd(
      qemu('share_fs = "VirtioFS"\n[hypervisor.virtiofsd]\ncache = "metadata"'),
      cHelp,
    );
    assert.equal(metadata.status, "fail");
    assert.match(metadata.verdict, /cache = "metadata" needs the Rust virtiofsd/);
    assert.equal((await checkVirtiofsd(qemu('share_fs = "VirtioFS"'), host({}))).status, "fail");
  });

  test("guest artifacts: present and matching their manifest, changed, missing, built for another VMM", async () => {
    const kernel = path.join(tmp, "vmlinux.bin");
    const image = path.join(tmp, "kuasar.img");
    await writeFile(kernel, "kernel bytes");
    await writeFile(image, "image bytes");
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    await writeFile(
      path.join(tmp, "vmlinux.manifest.json"),
      JSON.stringify({
        kernelVersion: "6.1.192",
        profile: "micro",
        hypervisors: ["qemu"],
        artifacts: { "vmlinux.bin": { size: 12, sha256: sha("kernel bytes") } },
      }),
    );
    await writeFile(
      `${image}.manifest.json`,
      JSON.stringify({
        components: { runc: "runc version 1.1.5", node: "v20.20.2" },
        artifact: { name: "kuasar.img", format: "ext4", size: 11, sha256: sha("image bytes") },
      }),
    );
    const config = qemu(`kernel_path = "${kernel}"\nimage_path = "${image}"`);
    assert.deepEqual(await checkArtifact(config, "guest-kernel", "kernel_path"), {
      id: "guest-kernel",
      status: "ok",
      verdict: `${kernel}: Linux 6.1.192 (micro profile); matches vmlinux.manifest.json`,
    });
    assert.match(
      (await checkArtifact(config, "guest-rootfs", "image_path")).verdict,
      /kuasar\.img: ext4, runc version 1\.1\.5, node v20\.20\.2; matches kuasar\.img\.manifest\.json$/,
    );
    await writeFile(image, "image byteZ");
    const changed = await checkArtifact(config, "guest-rootfs", "image_path");
    assert.equal(changed.status, "fail");
    assert.match(changed.verdict, /has sha256 \w{12}…, .*kuasar\.img\.manifest\.json says \w{12}…/);
    await writeFile(image, "short");
    assert.match((await checkArtifact(config, "guest-rootfs", "image_path")).verdict, /is 5 bytes, .* says 11/);
    const clh = parseConfig(
      `[hypervisor]\npath = "/usr/local/bin/cloud-hypervisor"\nkernel_path = "${kernel}"\n`,
      "c.toml",
    ).config;
    const otherVmm = await checkArtifact(clh, "guest-kernel", "kernel_path");
    assert.equal(otherVmm.status, "warn");
    assert.match(otherVmm.verdict, /built for qemu, not cloud-hypervisor/);
    await mkdir(path.join(tmp, "bare"));
    await writeFile(path.join(tmp, "bare/kuasar.initrd"), "x");
    const bare = qemu(`image_path = ""\ninitrd_path = "${tmp}/bare/kuasar.initrd"`);
    assert.match((await checkArtifact(bare, "guest-rootfs", "initrd_path")).verdict, /no manifest beside it/);
    const gone = await checkArtifact(qemu(`kernel_path = "${tmp}/nope"`), "guest-kernel", "kernel_path");
    assert.equal(gone.status, "fail");
    assert.match(gone.fix!, /make install-vmm/);
  });

  test("config: defaults when the default file is missing, every problem when it is invalid, debug shown", async () => {
    const missing = await checkConfig(path.join(tmp, "none.toml"), false);
    assert.equal(missing.result.status, "warn");
    assert.deepEqual(missing.config, defaultConfig("qemu"));
    const explicit = await checkConfig(path.join(tmp, "none.toml"), true);
    assert.equal(explicit.result.status, "fail");
    assert.equal(explicit.config, undefined);
    const bad = path.join(tmp, "bad.toml");
    await writeFile(bad, '[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\nvcpus = "2"\nmemory_in_mb = 1\n');
    const invalid = await checkConfig(bad, true);
    assert.equal(invalid.result.status, "fail");
    assert.match(invalid.result.verdict, /hypervisor\.vcpus: .*; hypervisor\.memory_in_mb: out of range/);
    const debug = path.join(tmp, "debug.toml");
    await writeFile(
      debug,
      '[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\n[hypervisor.task]\ndebug = true\n',
    );
    assert.match((await checkConfig(debug, true)).result.verdict, /debug console on \(vsock port 1025\)$/);
  });
});

describe("containerd", () => {
  let tmp: string;
  const listen = "/run/vmm-sandboxer.sock";
  const DROP_IN = `version = 3
[proxy_plugins.vmm]
  type = "sandbox"
  address = "/run/vmm-sandboxer.sock"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-vmm]
  runtime_type = "io.containerd.kuasar-vmm.v1"
  sandboxer = "vmm"
  io_type = "fifo"
`;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "doctor-containerd-"));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  /** A containerd config directory: config.toml plus conf.d/kuasar-vmm.toml. */
  async function layout(root: string, dropIn = DROP_IN): Promise<string> {
    const dir = path.join(tmp, `c${Math.random().toString(36).slice(2, 8)}`);
    await mkdir(path.join(dir, "conf.d"), { recursive: true });
    await writeFile(path.join(dir, "config.toml"), root);
    await writeFile(path.join(dir, "conf.d/kuasar-vmm.toml"), dropIn);
    return path.join(dir, "config.toml");
  }

  test("version: 2.1 and newer; older and missing fail", async () => {
    const version = (out: string) => host({ programs: { "/usr/bin/containerd": out } });
    const ok = await checkContainerdVersion(
      version("containerd github.com/containerd/containerd/v2 2.1.9+unknown abcdef\n"),
    );
    assert.deepEqual(ok, { id: "containerd", status: "ok", verdict: "/usr/bin/containerd 2.1.9+unknown (>= 2.1)" });
    const old = await checkContainerdVersion(
      version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20\n"),
    );
    assert.equal(old.status, "fail");
    assert.match(old.verdict, /is 1\.6\.20~ds1; kuasar-vmm needs 2\.1 or newer/);
    assert.equal((await checkContainerdVersion(host({}))).status, "fail");
  });

  test("the installed drop-in imported by a version 3 root config passes", async () => {
    const root = await layout('version = 3\nimports = ["conf.d/*.toml"]\n');
    const r = await checkContainerdConfig(root, listen);
    assert.equal(r.result.status, "ok", r.result.verdict);
    assert.match(
      r.result.verdict,
      /^runtime kuasar-vmm -> sandboxer vmm -> \/run\/vmm-sandboxer\.sock \(.*conf\.d\/kuasar-vmm\.toml, imported by/,
    );
    assert.equal(r.runtimeType, "io.containerd.kuasar-vmm.v1");
  });

  test("Debian's version 2 root importing the version 3 drop-in: containerd would not start", async () => {
    const root = await layout('version = 2\nimports = ["/dev/null/none/*.toml", "conf.d/*.toml"]\n');
    const r = await checkContainerdConfig(root, listen);
    assert.equal(r.result.status, "fail");
    assert.match(
      r.result.verdict,
      /containerd will not start: .*kuasar-vmm\.toml has version 3, higher than the root config's 2/,
    );
    assert.match(r.result.fix!, /containerd config migrate/);
  });

  test("a drop-in that exists but is not imported is named, with the imports line to add", async () => {
    const root = await layout("version = 3\n");
    const r = await checkContainerdConfig(root, listen);
    assert.equal(r.result.status, "fail");
    assert.match(r.result.verdict, /conf\.d\/kuasar-vmm\.toml exists but .*config\.toml does not import it/);
    assert.match(r.result.fix!, /imports = \[".*\/conf\.d\/\*\.toml"\]/);
  });

  test("a version 2 root with the runtime in its own (migrated) form passes", async () => {
    const root = await layout(
      'version = 2\n[proxy_plugins.vmm]\ntype = "sandbox"\naddress = "/run/vmm-sandboxer.sock"\n' +
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-vmm]\nruntime_type = "io.containerd.kuasar-vmm.v1"\nsandboxer = "vmm"\n',
    );
    assert.equal((await checkContainerdConfig(root, listen)).result.status, "ok");
  });

  test("wrong address, options table, missing proxy plugin, other io_type, disabled CRI", async () => {
    const imports = 'version = 3\nimports = ["conf.d/*.toml"]\n';
    const wrong = await checkContainerdConfig(
      await layout(imports, DROP_IN.replace("/run/vmm-sandboxer.sock", "/tmp/x.sock")),
      listen,
    );
    assert.equal(wrong.result.status, "fail");
    assert.match(
      wrong.result.verdict,
      /address = "\/tmp\/x\.sock", but the daemon listens on \/run\/vmm-sandboxer\.sock/,
    );
    const options = await checkContainerdConfig(
      await layout(
        imports,
        `${DROP_IN}[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-vmm.options]\n  BinaryName = "x"\n`,
      ),
      listen,
    );
    assert.match(options.result.verdict, /has an options table/);
    const noProxy = await checkContainerdConfig(
      await layout(imports, DROP_IN.replace("[proxy_plugins.vmm]", "[proxy_plugins.other]")),
      listen,
    );
    assert.match(noProxy.result.verdict, /sandboxer = "vmm", but there is no \[proxy_plugins\.vmm\]/);
    const streaming = await checkContainerdConfig(
      await layout(imports, DROP_IN.replace('"fifo"', '"streaming"')),
      listen,
    );
    assert.equal(streaming.result.status, "warn");
    const disabled = await checkContainerdConfig(
      await layout(`version = 3\ndisabled_plugins = ["io.containerd.cri.v1.runtime"]\nimports = ["conf.d/*.toml"]\n`),
      listen,
    );
    assert.match(disabled.result.verdict, /disabled_plugins turns off io\.containerd\.cri\.v1\.runtime/);
  });

  test("no config file at all, and a missing explicit import", async () => {
    const none = await checkContainerdConfig(path.join(tmp, "absent/config.toml"), listen);
    assert.match(none.result.verdict, /does not exist: containerd runs with its defaults/);
    const root = await layout('version = 3\nimports = ["/nonexistent/kuasar.toml"]\n');
    const r = await checkContainerdConfig(root, listen);
    assert.match(
      r.result.verdict,
      /\/nonexistent\/kuasar\.toml does not exist \(imported by .*\): containerd will not start/,
    );
  });

  test("the shim binary containerd resolves after a restart", async () => {
    assert.equal(shimBinary("io.containerd.kuasar-vmm.v1"), "containerd-shim-kuasar-vmm-v1");
    const shim = "/usr/local/bin/containerd-shim-kuasar-vmm-v1";
    assert.equal((await checkShim(undefined, host({ programs: { [shim]: "" } }))).status, "ok");
    const missing = await checkShim("io.containerd.kuasar-vmm.v1", host({}));
    assert.equal(missing.status, "warn");
    assert.match(missing.verdict, /containerd-shim-kuasar-vmm-v1 is not on PATH/);
  });
});

test("paths: socket directory and state directory (or the ancestor it is created in) must take writes", async () => {
  const probes = host({ writable: ["/run"] });
  assert.equal((await checkPaths("/run/vmm-sandboxer.sock", "/run/kuasar-vmm", probes)).status, "ok");
  const r = await checkPaths("/missing/dir/sock", "/run/kuasar-vmm", probes);
  assert.equal(r.status, "fail");
  assert.match(r.verdict, /the socket directory \/missing\/dir does not exist/);
  const ro = await checkPaths("/run/x.sock", "/ro/state", host({ writable: ["/run"], devices: { "/ro": true } }));
  assert.match(ro.verdict, /\/ro\/state cannot be created: \/ro is not writable/);
});

test("daemon: a stale socket and a socket something else serves are not a vmm-sandboxer", {
  timeout: 20_000,
}, async () => {
  const tmp = await mkdtemp(path.join(os.tmpdir(), "doctor-daemon-"));
  const probes = { ...host({}), exists: async () => true };
  try {
    assert.match((await checkDaemon(path.join(tmp, "none.sock"), host({}))).verdict, /^not running: .* does not exist/);
    // Accepts and hangs up, like a socket left behind by a dead daemon that something else now holds.
    const stale = path.join(tmp, "stale.sock");
    const plain = net.createServer((c) => c.destroy());
    await new Promise<void>((r) => plain.listen(stale, r));
    const r1 = await checkDaemon(stale, probes);
    plain.close();
    assert.equal(r1.status, "warn");
    assert.match(r1.verdict, /exists but nothing answers on it/);
    const other = path.join(tmp, "other.sock");
    const server = new grpc.Server();
    await new Promise<void>((res, rej) =>
      server.bindAsync(`unix://${other}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())),
    );
    const r2 = await checkDaemon(other, probes);
    server.forceShutdown();
    assert.match(r2.verdict, /something other than vmm-sandboxer serves there/);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test("report: one line per check, a fix under failures and warnings, exit status 1 only on failure", () => {
  const report = summarize([
    { id: "a", status: "ok", verdict: "fine" },
    { id: "bb", status: "warn", verdict: "meh", fix: "do x" },
    { id: "c", status: "skip", verdict: "n/a" },
  ]);
  assert.equal(exitCode(report), 0);
  assert.equal(
    formatText(report),
    "ok    a   fine\nwarn  bb  meh\n        fix: do x\nskip  c   n/a\nno failures, 1 warning: sandboxes can run (see the warnings)\n",
  );
  const failed = summarize([{ id: "a", status: "fail", verdict: "broken", fix: "mend" }]);
  assert.equal(exitCode(failed), 1);
  assert.match(formatText(failed), /^FAIL {2}a {2}broken\n {7}fix: mend\n1 check failed, 0 warnings/);
});

test("port-forward: iptables present is ok, missing is a warning naming what stops working", async () => {
  const ok = await checkPortForward(host({ programs: { "/usr/sbin/iptables": "" } }));
  assert.equal(ok.status, "ok");
  const missing = await checkPortForward(host({}));
  assert.equal(missing.status, "warn");
  assert.match(missing.verdict, /kubectl port-forward into them fails/);
  assert.match(missing.fix ?? "", /apt-get install iptables/);
});
