import { existsSync } from "node:fs";
import { chmod, chown, lstat, mkdir, readFile, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { HYPERVISORS, type HypervisorKind } from "../../runtime/sandboxer/hypervisor/names.ts";
import { hashFile } from "../file-digest.ts";
import { installVmm, layout, uninstallVmm } from "../install-vmm.ts";
import { ConfigError, parseContainerdVersion, planMerge, STATE_DIR, splitManaged } from "./containerd-config.ts";
import { hostSystemctl, inHostRoot, type Runner, runChecked } from "./host.ts";
import type { NodeApi } from "./kube.ts";
import { ARTIFACTS_DIR, ENV, NODE_LABEL, READY_FILE } from "./paths.ts";

const SERVICE = "kuasar-vmm.service";
/** bin/ name of the containerd drop-in (the units stage's), whose tables are merged into the main config. */
export const DROP_IN = "containerd-kuasar-vmm.toml";
const UNIT_SRC = "kuasar-vmm.service";
const MIN_CONTAINERD = { major: 2, minor: 1 };

export interface InstallerOptions {
  mode: "install" | "uninstall";
  /** The host's root directory as this process sees it (the DaemonSet mounts it at /host). */
  hostRoot: string;
  binDir: string;
  hypervisor: HypervisorKind;
  /** Host path of containerd's main config. */
  containerdConfig: string;
  containerdService: string;
  /** The node to label; unset outside Kubernetes. */
  nodeName?: string;
}

export interface InstallerDeps {
  run: Runner;
  nodeApi: () => Promise<NodeApi>;
  log: (line: string) => void;
}

/** What the installer did on this host, under <host>/var/lib/kuasar-vmm-node-installer/state.json. */
interface State {
  containerdConfig: string;
  /** Whether the config existed before the block was added (its bytes are in BACKUP then). */
  configExisted: boolean;
  /** Host-root-relative directories made for the config, removed on uninstall when empty. */
  createdDirs: string[];
  /** The label this installer set; a label someone else set is never recorded, so never removed. */
  label?: { node: string; key: string };
}

const STATE_FILE = `${STATE_DIR}/state.json`;
const BACKUP_FILE = `${STATE_DIR}/containerd-config.toml.orig`;

export async function runInstaller(o: InstallerOptions, d: InstallerDeps): Promise<void> {
  if (o.mode === "install") await install(o, d);
  else await uninstall(o, d);
}

async function install(o: InstallerOptions, d: InstallerDeps): Promise<void> {
  // Every check before the first write: a refusal leaves the host as it was.
  await checkContainerd(o, d);
  const cfgFile = hostPath(o.hostRoot, o.containerdConfig);
  const current = await readConfig(cfgFile, o.containerdConfig);
  const dropInFile = path.join(o.binDir, DROP_IN);
  const dropIn = await readFile(dropInFile, "utf8").catch(() => {
    throw new Error(`${dropInFile} is missing; the image must carry the units stage's ${DROP_IN}`);
  });
  const plan = planMerge(current, dropIn, { file: o.containerdConfig, dropInFile });
  const state = await readState(o.hostRoot);
  if (state && state.containerdConfig !== o.containerdConfig) {
    throw new Error(
      `kuasar-vmm was installed into the containerd config ${state.containerdConfig}, not ${o.containerdConfig}; run the uninstall mode first (with ${ENV.containerdConfig}=${state.containerdConfig})`,
    );
  }

  const next: State = state ?? {
    containerdConfig: o.containerdConfig,
    configExisted: current !== undefined,
    createdDirs: [],
  };
  const addsBlock = plan.changed && !plan.hadBlock;
  if (addsBlock) next.configExisted = current !== undefined;
  await writeState(o.hostRoot, next);
  if (addsBlock) {
    // The config as it is before the block goes in: what uninstall gives back.
    if (current === undefined) await rm(path.join(o.hostRoot, BACKUP_FILE), { force: true });
    else await writeFile(path.join(o.hostRoot, BACKUP_FILE), current, { mode: 0o600 });
  }

  const entries = layout(o.hypervisor);
  const dsts = entries.map((e) => e.dst);
  const before = await digests(o.hostRoot, dsts);
  await installVmm({ binDir: o.binDir, destDir: o.hostRoot, hypervisor: o.hypervisor });
  const after = await digests(o.hostRoot, dsts);
  const changed = entries.filter((e) => before[e.dst] !== after[e.dst]);
  d.log(
    changed.length
      ? `installed ${changed.map((e) => `/${e.dst}`).join(", ")}`
      : `the ${entries.length} kuasar-vmm files are already installed as shipped`,
  );

  if (plan.changed) {
    const made = await mkdirs(o.hostRoot, path.posix.dirname(o.containerdConfig));
    next.createdDirs = [...new Set([...next.createdDirs, ...made])];
    await writeState(o.hostRoot, next);
    await writeConfig(cfgFile, plan.text);
    d.log(`${o.containerdConfig}: ${plan.hadBlock ? "updated" : "appended"} the kuasar-vmm block`);
  } else d.log(`${o.containerdConfig} already holds the kuasar-vmm block`);

  if (changed.some((e) => e.src === UNIT_SRC)) await systemctl(d, "daemon-reload");
  await systemctl(d, "enable", SERVICE);
  await systemctl(d, changed.length ? "restart" : "start", SERVICE);
  if (plan.changed) await systemctl(d, "restart", o.containerdService);

  if (!o.nodeName) {
    d.log(`${ENV.nodeName} is not set: the node is not labelled ${NODE_LABEL}`);
    return;
  }
  const api = await d.nodeApi();
  const labels = await api.labels(o.nodeName);
  if (labels[NODE_LABEL] === undefined) {
    await api.setLabel(o.nodeName, NODE_LABEL, "true");
    next.label = { node: o.nodeName, key: NODE_LABEL };
    await writeState(o.hostRoot, next);
    d.log(`labelled node ${o.nodeName} ${NODE_LABEL}=true`);
  } else if (!next.label) {
    d.log(
      `node ${o.nodeName} already has ${NODE_LABEL}=${labels[NODE_LABEL]}, not set by this installer: left as it is`,
    );
  }
}

async function uninstall(o: InstallerOptions, d: InstallerDeps): Promise<void> {
  const state = await readState(o.hostRoot);
  const cfgHostPath = state?.containerdConfig ?? o.containerdConfig;
  const cfgFile = hostPath(o.hostRoot, cfgHostPath);
  const current = await readConfig(cfgFile, cfgHostPath);
  const split = current === undefined ? undefined : splitManaged(current, cfgHostPath);
  if (!state && !split?.hadBlock) {
    d.log(`nothing of the kuasar-vmm node installer on ${o.hostRoot}: nothing to do`);
    return;
  }

  // The label first, so no new kuasar-vmm pod is scheduled here while the runtime goes away.
  if (state?.label) {
    const api = await d.nodeApi();
    await api.setLabel(state.label.node, state.label.key, null);
    d.log(`removed the label ${state.label.key} from node ${state.label.node}`);
    delete state.label;
    await writeState(o.hostRoot, state);
  }

  let keepBackup = false;
  if (split?.hadBlock) {
    const backupFile = path.join(o.hostRoot, BACKUP_FILE);
    const backup = await readFile(backupFile, "utf8").catch(() => undefined);
    if (state && !state.configExisted && split.operator === "") {
      await rm(cfgFile);
      d.log(`${cfgHostPath}: removed (it did not exist before the install)`);
    } else {
      await writeConfig(cfgFile, split.operator);
      if (backup === split.operator) d.log(`${cfgHostPath}: restored byte for byte as it was before the install`);
      else if (backup !== undefined) {
        keepBackup = true;
        d.log(
          `${cfgHostPath}: removed the kuasar-vmm block; the rest was changed since the install and is kept as it is now (the pre-install copy stays at /${BACKUP_FILE})`,
        );
      } else d.log(`${cfgHostPath}: removed the kuasar-vmm block`);
    }
    await systemctl(d, "restart", o.containerdService);
  } else d.log(`${cfgHostPath} holds no kuasar-vmm block`);

  if (!state) return;
  const unit = layout(o.hypervisor).find((e) => e.src === UNIT_SRC)!;
  const unitFile = path.join(o.hostRoot, unit.dst);
  if (existsSync(unitFile)) await systemctl(d, "disable", "--now", SERVICE);
  const removed = await uninstallVmm({ destDir: o.hostRoot });
  d.log(`removed ${removed.length} kuasar-vmm files`);
  if (removed.includes(unit.dst)) await systemctl(d, "daemon-reload");
  if (keepBackup) await rm(path.join(o.hostRoot, STATE_FILE), { force: true });
  else await rm(path.join(o.hostRoot, STATE_DIR), { recursive: true, force: true });
  for (const dir of [...state.createdDirs].sort((a, b) => b.length - a.length)) {
    await rmdir(path.join(o.hostRoot, dir)).catch(() => undefined);
  }
}

async function checkContainerd(o: InstallerOptions, d: InstallerDeps): Promise<void> {
  const out = await runChecked(
    d.run,
    inHostRoot(o.hostRoot, ["containerd", "--version"]),
    "is containerd installed on this node? Nothing was changed.",
  );
  const line = out.trim().split("\n")[0] ?? "";
  const v = parseContainerdVersion(line);
  if (!v) throw new Error(`cannot read a version in 'containerd --version' output '${line}'; nothing was changed`);
  if (v.major < MIN_CONTAINERD.major || (v.major === MIN_CONTAINERD.major && v.minor < MIN_CONTAINERD.minor)) {
    throw new Error(
      `containerd on this node is ${v.text}; kuasar-vmm needs containerd ${MIN_CONTAINERD.major}.${MIN_CONTAINERD.minor} or newer (config version 3, sandbox controllers whose task API address containerd dials itself). Upgrade containerd on the node, then run the installer again. Nothing was changed.`,
    );
  }
  d.log(`containerd ${v.text}`);
}

async function systemctl(d: InstallerDeps, ...args: string[]): Promise<void> {
  const unit = args.find((a) => a.endsWith(".service"));
  const hint = unit ? `'journalctl -u ${unit}' on the node says more` : "systemd's journal on the node says more";
  await runChecked(d.run, hostSystemctl(...args), hint);
}

function hostPath(hostRoot: string, abs: string): string {
  return path.join(hostRoot, abs);
}

/** The config's text, or undefined when it does not exist. Only a regular UTF-8 file is accepted. */
async function readConfig(file: string, name: string): Promise<string | undefined> {
  const st = await lstat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  if (!st) return undefined;
  if (st.isSymbolicLink()) {
    throw new ConfigError(
      `${name} is a symbolic link; set ${ENV.containerdConfig} to the file it points to. Nothing was changed.`,
    );
  }
  if (!st.isFile()) throw new ConfigError(`${name} is not a regular file. Nothing was changed.`);
  const bytes = await readFile(file);
  const text = bytes.toString("utf8");
  // Restoring byte for byte needs a lossless round trip; TOML is UTF-8 anyway.
  if (!Buffer.from(text, "utf8").equals(bytes)) {
    throw new ConfigError(`${name} is not valid UTF-8, which TOML requires; fix it first. Nothing was changed.`);
  }
  return text;
}

/** Replaces the file atomically, keeping its mode and owner (a new file gets 0644). */
async function writeConfig(file: string, text: string): Promise<void> {
  const st = await stat(file).catch(() => undefined);
  const tmp = `${file}.kuasar-vmm-tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  if (st) {
    await chmod(tmp, st.mode & 0o7777);
    await chown(tmp, st.uid, st.gid);
  }
  await rename(tmp, file);
}

/** mkdir -p under the host root; returns the directories it made, host-root-relative. */
async function mkdirs(hostRoot: string, absDir: string): Promise<string[]> {
  const parts = absDir.split("/").filter(Boolean);
  const made: string[] = [];
  for (let i = 1; i <= parts.length; i++) {
    const rel = parts.slice(0, i).join("/");
    if (existsSync(path.join(hostRoot, rel))) continue;
    await mkdir(path.join(hostRoot, rel));
    await chmod(path.join(hostRoot, rel), 0o755);
    made.push(rel);
  }
  return made;
}

async function digests(root: string, files: string[]): Promise<Record<string, string | undefined>> {
  const out: Record<string, string | undefined> = {};
  for (const f of files) out[f] = await hashFile(path.join(root, f)).catch(() => undefined);
  return out;
}

async function readState(hostRoot: string): Promise<State | undefined> {
  const file = path.join(hostRoot, STATE_FILE);
  const text = await readFile(file, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as State;
  } catch (err) {
    throw new Error(`${file} is not valid JSON (${(err as Error).message}); restore it or remove it to start over`);
  }
}

/** Writes the state; the directories made for it are recorded in it, so uninstall removes them too. */
async function writeState(hostRoot: string, s: State): Promise<void> {
  const made = await mkdirs(hostRoot, `/${STATE_DIR}`);
  if (made.length) {
    await chmod(path.join(hostRoot, STATE_DIR), 0o700);
    s.createdDirs = [...new Set([...s.createdDirs, ...made.filter((d) => d !== STATE_DIR)])];
  }
  await writeFile(path.join(hostRoot, STATE_FILE), `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
}

const USAGE = `usage: kuasar-vmm-node-installer [install|uninstall|ready] [options]

  install    lay out kuasar-vmm on the host (like make install-vmm), merge the vmm proxy plugin and the
             kuasar-vmm runtime into containerd's config, enable and start kuasar-vmm.service, restart
             containerd if its config changed, label the node ${NODE_LABEL}=true
  uninstall  undo exactly that: the containerd config comes back byte for byte
  ready      exit 0 once the mode's work is done (the readiness probe)

options (environment variable in brackets):
  --host-root DIR           the host's / as seen here [${ENV.hostRoot}] (default /host)
  --hypervisor NAME         qemu, cloud-hypervisor or stratovirt: the config.toml to install [${ENV.hypervisor}] (qemu)
  --containerd-config PATH  containerd's config on the host [${ENV.containerdConfig}] (/etc/containerd/config.toml)
  --containerd-service NAME [${ENV.containerdService}] (containerd.service)
  --bin-dir DIR             the artifacts to install (default ${ARTIFACTS_DIR})
  --stay                    after the work, stay running until SIGTERM (a DaemonSet pod) [${ENV.stay}=true]
the mode may also come from ${ENV.mode}; the node to label from ${ENV.nodeName}.`;

export interface MainDeps extends InstallerDeps {
  error: (line: string) => void;
  readyFile?: string;
  /** Resolves on SIGTERM/SIGINT (used with --stay). */
  waitForSignal: () => Promise<void>;
}

/** The entrypoint: returns the exit code. */
export async function main(argv: string[], env: NodeJS.ProcessEnv, deps: MainDeps): Promise<number> {
  const readyFile = deps.readyFile ?? READY_FILE;
  let opts: InstallerOptions;
  let stay: boolean;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        "host-root": { type: "string" },
        hypervisor: { type: "string" },
        "containerd-config": { type: "string" },
        "containerd-service": { type: "string" },
        "bin-dir": { type: "string" },
        stay: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      deps.log(USAGE);
      return 0;
    }
    if (positionals.length > 1) throw new Error(`one mode at a time, got: ${positionals.join(" ")}`);
    const mode = positionals[0] ?? env[ENV.mode] ?? "install";
    if (mode === "ready") return existsSync(readyFile) ? 0 : 1;
    if (mode !== "install" && mode !== "uninstall") {
      throw new Error(`the mode must be install, uninstall or ready, got '${mode}'`);
    }
    const hypervisor = values.hypervisor ?? env[ENV.hypervisor] ?? "qemu";
    if (!(HYPERVISORS as readonly string[]).includes(hypervisor)) {
      throw new Error(`--hypervisor must be one of ${HYPERVISORS.join(", ")}, got '${hypervisor}'`);
    }
    const hostRoot = path.resolve(values["host-root"] ?? env[ENV.hostRoot] ?? "/host");
    if (!(await stat(hostRoot).catch(() => undefined))?.isDirectory()) {
      throw new Error(
        `the host root ${hostRoot} is not a directory; mount the host's / there (hostPath) or pass --host-root`,
      );
    }
    const containerdConfig = values["containerd-config"] ?? env[ENV.containerdConfig] ?? "/etc/containerd/config.toml";
    if (!path.posix.isAbsolute(containerdConfig)) {
      throw new Error(`the containerd config must be an absolute host path, got '${containerdConfig}'`);
    }
    opts = {
      mode,
      hostRoot,
      binDir: values["bin-dir"] ?? ARTIFACTS_DIR,
      hypervisor: hypervisor as HypervisorKind,
      containerdConfig: path.posix.normalize(containerdConfig),
      containerdService: values["containerd-service"] ?? env[ENV.containerdService] ?? "containerd.service",
      nodeName: env[ENV.nodeName] || undefined,
    };
    stay = values.stay ?? env[ENV.stay] === "true";
  } catch (err) {
    deps.error(`kuasar-vmm-node-installer: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  await rm(readyFile, { force: true });
  try {
    await runInstaller(opts, deps);
  } catch (err) {
    deps.error(`kuasar-vmm-node-installer: ${opts.mode} failed: ${(err as Error).message}`);
    return 1;
  }
  deps.log(`${opts.mode} done`);
  if (!stay) return 0;
  await writeFile(readyFile, `${opts.mode}\n`);
  await deps.waitForSignal();
  return 0;
}
