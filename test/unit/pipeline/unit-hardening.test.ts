import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

// kuasar-vmm.service's sandboxing (docs/unit-hardening.md), judged by systemd's own tools in offline mode.
const UNIT = "installers/systemd/kuasar-vmm.service";
/** The overall exposure `systemd-analyze security` gives the unit; raising it needs a reason in the doc. */
const MAX_EXPOSURE = 5.9;

/**
 * Options that make systemd 252 give the unit a mount namespace of its own (exec_needs_mount_namespace()), with the
 * values that do not. Under one, the mounts a daemon makes live in a namespace a restarted daemon cannot see, while
 * the VMs that use them outlive it (KillMode=process).
 */
const MOUNT_NAMESPACE_OPTIONS: Record<string, string[]> = {
  RootDirectory: [],
  RootImage: [],
  ReadWritePaths: [],
  ReadOnlyPaths: [],
  InaccessiblePaths: [],
  ReadWriteDirectories: [],
  ReadOnlyDirectories: [],
  InaccessibleDirectories: [],
  ExecPaths: [],
  NoExecPaths: [],
  BindPaths: [],
  BindReadOnlyPaths: [],
  TemporaryFileSystem: [],
  MountImages: [],
  ExtensionImages: [],
  ExtensionDirectories: [],
  MountFlags: ["", "shared"],
  PrivateTmp: ["no", "false", "off", "0"],
  PrivateDevices: ["no", "false", "off", "0"],
  PrivateMounts: ["no", "false", "off", "0"],
  PrivateIPC: ["no", "false", "off", "0"],
  IPCNamespacePath: [],
  ProtectSystem: ["no", "false", "off", "0"],
  ProtectHome: ["no", "false", "off", "0"],
  ProtectKernelTunables: ["no", "false", "off", "0"],
  ProtectKernelModules: ["no", "false", "off", "0"],
  ProtectKernelLogs: ["no", "false", "off", "0"],
  ProtectControlGroups: ["no", "false", "off", "0"],
  ProtectProc: ["default"],
  ProcSubset: ["all"],
  DynamicUser: ["no", "false", "off", "0"],
  LogNamespace: [],
};

/** `Key=value` lines of a unit's [Service] section (comments and other sections skipped). */
function serviceSettings(unit: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let section = "";
  for (const raw of unit.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[")) section = line;
    else if (section === "[Service]" && line.includes("=")) {
      const at = line.indexOf("=");
      out.push([line.slice(0, at).trim(), line.slice(at + 1).trim()]);
    }
  }
  return out;
}

/** The settings of a unit that would give it a mount namespace, as "Key=value". */
function mountNamespaceSettings(unit: string): string[] {
  return serviceSettings(unit)
    .filter(([k, v]) => k in MOUNT_NAMESPACE_OPTIONS && !MOUNT_NAMESPACE_OPTIONS[k]!.includes(v.toLowerCase()))
    .map(([k, v]) => `${k}=${v}`);
}

function systemdAnalyze(args: string[]): { status: number | null; out: string } {
  const r = spawnSync("systemd-analyze", args, { encoding: "utf8" });
  if (r.error) throw new Error(`systemd-analyze cannot run (${r.error.message}): apt-get install systemd`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Overall exposure of a unit file (0 to 10) and the table behind it. */
function exposure(unitFile: string): { score: number; table: string } {
  const { status, out } = systemdAnalyze(["security", "--offline=yes", unitFile]);
  const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(out);
  if (status !== 0 || !m) throw new Error(`systemd-analyze security ${unitFile} failed (status ${status}):\n${out}`);
  return { score: Number(m[1]), table: out };
}

let tmp: string;
let unitText: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "unit-hardening-"));
  unitText = await readFile(UNIT, "utf8");
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test("the unit passes systemd-analyze verify as installed", async () => {
  // verify --root resolves everything inside the root: the unit, the units it names and the programs it runs.
  const root = path.join(tmp, "root");
  const units = path.join(root, "usr/lib/systemd/system");
  await mkdir(units, { recursive: true });
  await copyFile(UNIT, path.join(units, "kuasar-vmm.service"));
  for (const t of ["sysinit", "basic", "shutdown", "network", "multi-user"]) {
    await writeFile(path.join(units, `${t}.target`), "[Unit]\n");
  }
  await writeFile(path.join(units, "containerd.service"), "[Service]\nExecStart=/bin/true\n");
  await mkdir(path.join(root, "bin"));
  await mkdir(path.join(root, "usr/local/bin"), { recursive: true });
  for (const [from, to] of [
    ["/usr/bin/kill", "bin/kill"],
    ["/usr/bin/true", "bin/true"],
    ["/usr/bin/true", "usr/local/bin/vmm-sandboxer"],
  ] as const) {
    await copyFile(from, path.join(root, to));
    await chmod(path.join(root, to), 0o755);
  }
  const verify = (unit: string) =>
    systemdAnalyze(["verify", `--root=${root}`, "--recursive-errors=no", `/usr/lib/systemd/system/${unit}`]);
  assert.deepEqual(verify("kuasar-vmm.service"), { status: 0, out: "" });
  // A misspelt sandboxing value is only a warning to systemd, which then drops the protection: verify reports it.
  await writeFile(
    path.join(units, "typo.service"),
    unitText.replace("[Service]\n", "[Service]\nSystemCallFilter=~@clocks\n"),
  );
  const typo = verify("typo.service");
  assert.notEqual(typo.status, 0);
  assert.match(typo.out, /Unknown system call group, ignoring: @clocks/);
});

test(`systemd-analyze security scores the unit at most ${MAX_EXPOSURE}; without its bounding set it scores worse`, async () => {
  const { score, table } = exposure(UNIT);
  assert.ok(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE}:\n${table}`);
  // The threshold is not slack a weakened unit fits under.
  const weakened = path.join(tmp, "weakened.service");
  await writeFile(weakened, unitText.replace(/^CapabilityBoundingSet=.*$/gm, ""));
  assert.ok(exposure(weakened).score > MAX_EXPOSURE, "the same unit without CapabilityBoundingSet= scores above it");
});

test("no setting gives the unit a mount namespace, and Kuasar's contract settings are kept", () => {
  assert.deepEqual(mountNamespaceSettings(unitText), []);
  const attempt = `${unitText}\n[Service]\nPrivateTmp=yes\nProtectSystem=strict\nProtectProc=invisible\nMountFlags=slave\nPrivateNetwork=yes\n`;
  assert.deepEqual(mountNamespaceSettings(attempt), [
    "PrivateTmp=yes",
    "ProtectSystem=strict",
    "ProtectProc=invisible",
    "MountFlags=slave",
  ]);
  const settings = serviceSettings(unitText).map(([k, v]) => `${k}=${v}`);
  for (const kept of [
    "Type=notify",
    "WatchdogSec=30s",
    "EnvironmentFile=-/etc/sysconfig/kuasar-vmm",
    "ExecStart=/usr/local/bin/vmm-sandboxer $OPTIONS",
    "ExecReload=/bin/kill -HUP $MAINPID",
    "Delegate=yes",
    "KillMode=process",
    "LimitNOFILE=1048576",
    "LimitNPROC=infinity",
    "LimitCORE=infinity",
  ]) {
    assert.ok(settings.includes(kept), `${UNIT} keeps ${kept}`);
  }
  assert.match(unitText, /^After=network\.target$/m);
  assert.match(unitText, /^WantedBy=multi-user\.target$/m);
});
