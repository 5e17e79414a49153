import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { parse } from "smol-toml";
import type { DoctorProbes } from "./probes.ts";
import type { CheckResult } from "./report.ts";

/** The sandbox API as unmodified containerd uses it (Start version 3, a task address) arrived in 2.1. */
const MIN_CONTAINERD: [number, number] = [2, 1];
export const RUNTIME_TYPE = "io.containerd.kuasar-vmm.v1";
const RUNTIME_NAME = "kuasar-vmm";

export async function checkContainerdVersion(probes: DoctorProbes): Promise<CheckResult> {
  const min = MIN_CONTAINERD.join(".");
  const bin = await probes.which("containerd");
  if (!bin) {
    return {
      id: "containerd",
      status: "fail",
      verdict: "containerd is not installed (not on PATH)",
      fix: `install containerd ${min} or newer (Debian: containerd/sid, pinned; see scripts/install-prereqs.sh)`,
    };
  }
  const r = await probes.run(bin, ["--version"]);
  const m = r.ok ? /\sv?(\d+)\.(\d+)(\.\d+)?\S*/.exec(r.output) : null;
  if (!m) {
    return {
      id: "containerd",
      status: "fail",
      verdict: `${bin} --version: ${r.ok ? `no version in ${JSON.stringify(r.output.trim())}` : r.error}`,
      fix: `reinstall containerd ${min} or newer`,
    };
  }
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const version = m[0].trim();
  if (major < MIN_CONTAINERD[0] || (major === MIN_CONTAINERD[0] && minor < MIN_CONTAINERD[1])) {
    return {
      id: "containerd",
      status: "fail",
      verdict: `${bin} is ${version}; kuasar-vmm needs ${min} or newer (sandbox API version 3)`,
      fix: `upgrade containerd to ${min} or newer (Debian bookworm's 1.6 has no sandbox API; see scripts/install-prereqs.sh)`,
    };
  }
  return { id: "containerd", status: "ok", verdict: `${bin} ${version} (>= ${min})` };
}

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === "object" && v !== null && !Array.isArray(v);
const table = (v: unknown): Table => (isTable(v) ? v : {});

interface ConfigFile {
  file: string;
  version: number;
  doc: Table;
}

/** Go's filepath.Match for one path element: * and ? never cross '/', [...] classes. */
function elementRegex(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        re += `[${pattern
          .slice(i + 1, end)
          .replace(/^\^/, "^")
          .replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** filepath.Glob: every existing path matching the pattern, each directory's matches in lexical order. */
async function glob(pattern: string): Promise<string[]> {
  let paths = ["/"];
  for (const part of pattern.split("/").filter(Boolean)) {
    const next: string[] = [];
    for (const dir of paths) {
      if (!/[*?[]/.test(part)) {
        next.push(path.join(dir, part));
        continue;
      }
      const re = elementRegex(part);
      const names = await readdir(dir).catch(() => [] as string[]);
      for (const n of names.sort()) if (re.test(n)) next.push(path.join(dir, n));
    }
    paths = next;
  }
  const existing: string[] = [];
  for (const p of paths)
    if (
      await readFile(p).then(
        () => true,
        () => false,
      )
    )
      existing.push(p);
  return existing;
}

/** containerd's resolveImports: relative to the importing file; globbed only when the path has a '*'. */
async function resolveImports(parent: string, imports: unknown): Promise<string[]> {
  const out: string[] = [];
  for (const raw of Array.isArray(imports) ? imports : []) {
    if (typeof raw !== "string") continue;
    const p = path.resolve(path.dirname(parent), raw);
    if (p.includes("*")) out.push(...(await glob(p)));
    else out.push(p);
  }
  return out;
}

/** Loads a containerd config and its imports in containerd's order (the root, then imports breadth first). */
async function loadChain(root: string): Promise<{ files: ConfigFile[]; problem?: { verdict: string; fix: string } }> {
  const files: ConfigFile[] = [];
  const loaded = new Set<string>();
  const pending = [root];
  let rootVersion = 0;
  while (pending.length > 0) {
    const file = pending.shift()!;
    if (loaded.has(file)) continue;
    let doc: Table;
    try {
      doc = parse(await readFile(file, "utf8"));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === "ENOENT" ? "does not exist" : `cannot be read: ${e.message.split("\n")[0]}`;
      return {
        files,
        problem: {
          verdict: `${file} ${why}${file === root ? "" : ` (imported by ${files.at(-1)?.file ?? root})`}: containerd will not start`,
          fix: file === root ? "fix the file" : `create it, or remove it from imports`,
        },
      };
    }
    const version = typeof doc.version === "number" ? doc.version : 0;
    // containerd takes the first non-zero version as the root's and refuses any file above it.
    if (rootVersion === 0) rootVersion = version;
    if (version > rootVersion) {
      return {
        files,
        problem: {
          verdict:
            `containerd will not start: ${file} has version ${version}, higher than the root config's ${rootVersion} ` +
            `("drop-in config version ${version} higher than root config version ${rootVersion}")`,
          fix:
            `migrate ${root} to version 3: \`containerd config migrate\` prints it migrated (run it while the import ` +
            "is not there yet), review it, write it back, then restart containerd",
        },
      };
    }
    files.push({ file, version, doc });
    loaded.add(file);
    pending.push(...(await resolveImports(file, doc.imports)));
  }
  return { files };
}

/** CRI runtimes of one file, wherever its config version keeps them (containerd migrates old ones). */
function runtimesOf(f: ConfigFile): Table {
  const plugins = table(f.doc.plugins);
  const cri =
    f.version >= 3
      ? plugins["io.containerd.cri.v1.runtime"]
      : f.version === 2
        ? plugins["io.containerd.grpc.v1.cri"]
        : plugins.cri;
  return table(table(table(cri).containerd).runtimes);
}

function merge(to: Table, from: Table): Table {
  const out: Table = { ...to };
  for (const [k, v] of Object.entries(from)) out[k] = isTable(v) && isTable(out[k]) ? merge(table(out[k]), v) : v;
  return out;
}

const shown = (v: unknown) => JSON.stringify(v);

/**
 * containerd's config (with imports) registers kuasar-vmm: a CRI runtime whose sandboxer names a sandbox proxy
 * plugin at the daemon's socket, and nothing that makes containerd refuse to start or to use it.
 */
export async function checkContainerdConfig(
  root: string,
  listen: string,
): Promise<{ result: CheckResult; runtimeType?: string }> {
  const id = "containerd-config";
  const chain = await loadChain(root);
  if (chain.problem && chain.files.length === 0 && chain.problem.verdict.includes("does not exist")) {
    return {
      result: {
        id,
        status: "fail",
        verdict: `${root} does not exist: containerd runs with its defaults, which do not load kuasar-vmm`,
        fix:
          'write a version 3 config (`containerd config default` is a start) with imports = ["/etc/containerd/conf.d/*.toml"] ' +
          "and run make install-vmm (it writes /etc/containerd/conf.d/kuasar-vmm.toml), then restart containerd",
      },
    };
  }
  if (chain.problem) return { result: { id, status: "fail", ...chain.problem } };

  const runtimes: Record<string, { value: Table; from: string }> = {};
  const proxies: Record<string, { value: Table; from: string }> = {};
  const disabled = new Set<string>();
  for (const f of chain.files) {
    for (const [name, r] of Object.entries(runtimesOf(f))) {
      runtimes[name] = { value: merge(runtimes[name]?.value ?? {}, table(r)), from: f.file };
    }
    // containerd replaces a proxy plugin wholesale when a later file names it again.
    for (const [name, p] of Object.entries(table(f.doc.proxy_plugins)))
      proxies[name] = { value: table(p), from: f.file };
    for (const d of Array.isArray(f.doc.disabled_plugins) ? f.doc.disabled_plugins : []) disabled.add(String(d));
  }
  const files = chain.files.map((f) => f.file).join(", ");
  const found =
    Object.entries(runtimes).find(([, r]) => r.value.runtime_type === RUNTIME_TYPE) ??
    Object.entries(runtimes).find(([name]) => name === RUNTIME_NAME);
  if (!found) {
    const dropIn = path.join(path.dirname(root), "conf.d", "kuasar-vmm.toml");
    const notImported = await readFile(dropIn).then(
      () => !chain.files.some((f) => f.file === dropIn),
      () => false,
    );
    return {
      result: notImported
        ? {
            id,
            status: "fail",
            verdict: `${dropIn} exists but ${root} does not import it`,
            fix: `add imports = ["${path.dirname(dropIn)}/*.toml"] to ${root} (above its first table), then restart containerd`,
          }
        : {
            id,
            status: "fail",
            verdict: `no CRI runtime with runtime_type = "${RUNTIME_TYPE}" in ${files}`,
            fix: "run make install-vmm (it writes /etc/containerd/conf.d/kuasar-vmm.toml) and import that file, or merge installers/containerd/kuasar-vmm.toml",
          },
    };
  }
  const [name, { value: rt, from }] = found;
  const problems: { verdict: string; fix: string }[] = [];
  const warnings: { verdict: string; fix: string }[] = [];
  for (const p of ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]) {
    if (disabled.has(p)) {
      problems.push({ verdict: `disabled_plugins turns off ${p}`, fix: `remove ${p} from disabled_plugins` });
    }
  }
  const sandboxer = rt.sandboxer;
  const proxy = typeof sandboxer === "string" ? proxies[sandboxer] : undefined;
  if (typeof sandboxer !== "string" || sandboxer === "") {
    problems.push({
      verdict: `runtime ${name} (${from}) sets no sandboxer, so containerd would start it through a shim`,
      fix: 'set sandboxer = "vmm" and add [proxy_plugins.vmm] (see installers/containerd/kuasar-vmm.toml)',
    });
  } else if (!proxy) {
    problems.push({
      verdict: `runtime ${name} has sandboxer = ${shown(sandboxer)}, but there is no [proxy_plugins.${sandboxer}]`,
      fix: `add [proxy_plugins.${sandboxer}] with type = "sandbox" and address = "${listen}"`,
    });
  } else {
    if (proxy.value.type !== "sandbox") {
      problems.push({
        verdict: `[proxy_plugins.${sandboxer}] (${proxy.from}) has type = ${shown(proxy.value.type)}, not "sandbox"`,
        fix: `set type = "sandbox"`,
      });
    }
    if (proxy.value.address !== listen) {
      problems.push({
        verdict: `[proxy_plugins.${sandboxer}] address = ${shown(proxy.value.address)}, but the daemon listens on ${listen}`,
        fix: "make them equal (the daemon's --listen comes from OPTIONS in /etc/sysconfig/kuasar-vmm)",
      });
    }
  }
  if (rt.options !== undefined) {
    problems.push({
      verdict: `runtime ${name} has an options table, which makes StartContainer fail to unmarshal runc options`,
      fix: `remove [...runtimes.${name}.options] from ${from}`,
    });
  }
  if (rt.io_type !== undefined && rt.io_type !== "fifo") {
    warnings.push({
      verdict: `runtime ${name} has io_type = ${shown(rt.io_type)}; kuasar-vmm is tested with "fifo"`,
      fix: 'set io_type = "fifo"',
    });
  }
  const runtimeType = typeof rt.runtime_type === "string" ? rt.runtime_type : undefined;
  const bad = problems.length > 0 ? problems : warnings;
  if (bad.length > 0) {
    return {
      runtimeType,
      result: {
        id,
        status: problems.length > 0 ? "fail" : "warn",
        verdict: bad.map((p) => p.verdict).join("; "),
        fix: `${bad.map((p) => p.fix).join("; ")}; then restart containerd`,
      },
    };
  }
  return {
    runtimeType,
    result: {
      id,
      status: "ok",
      verdict: `runtime ${name} -> sandboxer ${sandboxer} -> ${listen} (${from === root ? root : `${from}, imported by ${root}`})`,
    },
  };
}

/** containerd-shim-<name>-<version> from a runtime_type, as containerd derives it. */
export function shimBinary(runtimeType: string): string {
  const parts = runtimeType.split(".");
  return `containerd-shim-${parts.at(-2)}-${parts.at(-1)}`;
}

/**
 * After a containerd restart, containerd resolves the shim binary for every task it reloads and drops the task when
 * the binary is missing; kuasar-vmm ships one (runtime/shim) that forwards containerd's `delete` to the daemon.
 */
export async function checkShim(runtimeType: string | undefined, probes: DoctorProbes): Promise<CheckResult> {
  const binary = shimBinary(runtimeType ?? RUNTIME_TYPE);
  const found = await probes.which(binary);
  if (found)
    return { id: "containerd-shim", status: "ok", verdict: `${found} (containerd resolves it after a restart)` };
  return {
    id: "containerd-shim",
    status: "warn",
    verdict: `${binary} is not on PATH: after a containerd restart, containers of running kuasar-vmm pods are dropped`,
    fix: `make install-vmm installs it as /usr/local/bin/${binary} (bin/${binary} from the sandboxer stage)`,
  };
}
