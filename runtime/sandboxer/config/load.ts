import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse, TomlDate, TomlError } from "smol-toml";
import { checkHelperRange, rangeProblems } from "../hypervisor/helper-uid.ts";
import {
  type Config,
  defaultConfig,
  describeType,
  type Field,
  HYPERVISORS,
  type HypervisorKind,
  TABLES,
  type TablePath,
} from "./schema.ts";

/** Everything wrong with a configuration file, reported together. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
    readonly warnings: string[] = [],
  ) {
    const bullets = (xs: string[]) => xs.map((x) => `  - ${x}`).join("\n");
    super(
      `invalid configuration ${file}:\n${bullets(problems)}\n` +
        (warnings.length ? `also:\n${bullets(warnings)}\n` : "") +
        "(every key, its type and default are listed in runtime/sandboxer/config/schema.ts)",
    );
    this.name = "ConfigError";
  }
}

export interface Loaded {
  config: Config;
  /** Unknown keys (with a "did you mean"), keys for another hypervisor, deprecated or ignored keys. */
  warnings: string[];
}

/**
 * Reads and validates the daemon's TOML configuration. A file that is missing or unreadable is an error, and so is a
 * helper uid range that takes ids of users, groups or subordinate ranges in etcDir's passwd, group, subuid, subgid.
 */
export async function loadConfig(file: string, etcDir = "/etc"): Promise<Loaded> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === "ENOENT"
        ? "no such file: create it (installers/config/config_<hypervisor>.toml are complete examples) or pass another --config"
        : `cannot read it: ${e.message}`;
    throw new ConfigError(file, [why]);
  }
  const loaded = parseConfig(text, file);
  const { sandbox, hypervisor } = loaded.config;
  if (hypervisor.type === "qemu") {
    const taken = await checkHelperRange({ base: sandbox.helper_uid_base, count: sandbox.helper_uid_count }, etcDir);
    if (taken.length > 0) throw new ConfigError(file, taken, loaded.warnings);
  }
  return loaded;
}

type Raw = Record<string, unknown>;

const isTable = (v: unknown): v is Raw =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof TomlDate);

function found(v: unknown): string {
  if (typeof v === "string") return `${JSON.stringify(v)} (string)`;
  if (typeof v === "bigint") return `${v} (integer)`;
  if (typeof v === "number") return Number.isInteger(v) ? `${v}.0 (float)` : `${v} (float)`;
  if (typeof v === "boolean") return `${v} (boolean)`;
  if (v instanceof TomlDate) return `${v.toISOString()} (date-time)`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (isTable(v)) return "a table";
  return String(v);
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  // Beyond about a third of the word the "suggestion" is noise.
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

const didYouMean = (word: string, candidates: readonly string[]) => {
  const c = closest(word, candidates);
  return c ? `; did you mean ${c}?` : "";
};

type Checked = { ok: true; value: unknown } | { ok: false; problem: string };

function check(f: Field, v: unknown): Checked {
  const expected = (hint = "") => ({
    ok: false as const,
    problem: `expected ${describeType(f)}, found ${found(v)}${hint}`,
  });
  switch (f.type) {
    case "string": {
      if (typeof v !== "string") return expected();
      const bad = f.check?.(v);
      return bad ? { ok: false, problem: `${bad}, found ${found(v)}` } : { ok: true, value: v };
    }
    case "integer": {
      if (typeof v !== "bigint") return expected(typeof v === "string" ? "; write it without quotes" : "");
      if (v < BigInt(f.min) || v > BigInt(f.max))
        return { ok: false, problem: `out of range: expected ${describeType(f)}, found ${v}` };
      return { ok: true, value: Number(v) };
    }
    case "boolean":
      if (typeof v !== "boolean") return expected(v === "true" || v === "false" ? "; write it without quotes" : "");
      return { ok: true, value: v };
    case "enum": {
      if (typeof v !== "string") return expected();
      const value = (f.values as readonly string[]).includes(v) ? v : f.aliases?.[v];
      if (value === undefined) return expected(didYouMean(v, [...f.values, ...Object.keys(f.aliases ?? {})]));
      return { ok: true, value };
    }
    case "string-list":
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) return expected();
      return { ok: true, value: [...v] };
  }
}

/** Which hypervisor the file is for: the explicit type, else what qemu_path / path name. */
function detectKind(h: Raw, problems: string[]): HypervisorKind | undefined {
  if (h.type !== undefined) return undefined; // validated with the other keys
  const byPath = (p: unknown): HypervisorKind | undefined => {
    if (typeof p !== "string") return undefined;
    const base = path.basename(p);
    return HYPERVISORS.find((hv) => base.includes(hv)) ?? (base.includes("qemu") ? "qemu" : undefined);
  };
  const fromPath = byPath(h.path);
  if (h.qemu_path !== undefined) {
    if (fromPath && fromPath !== "qemu") {
      problems.push(
        `hypervisor.qemu_path and hypervisor.path = ${JSON.stringify(h.path)} name different hypervisors: ` +
          'set [hypervisor] type = "qemu", "cloud-hypervisor" or "stratovirt"',
      );
      return undefined;
    }
    return "qemu";
  }
  if (fromPath) return fromPath;
  problems.push(
    "hypervisor: cannot tell which hypervisor this file is for: set [hypervisor] type = " +
      '"qemu", "cloud-hypervisor" or "stratovirt" (or qemu_path, or a path naming the VMM binary)',
  );
  return undefined;
}

const list = (hvs: readonly HypervisorKind[]) => hvs.join(" and ");

/** Validates a TOML document against the schema; file names the source in every message. */
export function parseConfig(text: string, file: string): Loaded {
  let doc: Raw;
  try {
    doc = parse(text, { integersAsBigInt: true, unsafeKeyBehaviour: "throw" });
  } catch (err) {
    if (err instanceof TomlError) {
      throw new ConfigError(file, [`line ${err.line}, column ${err.column}: ${err.message.split("\n")[0]}`]);
    }
    throw new ConfigError(file, [(err as Error).message]);
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  const warn = (msg: string) => warnings.push(`${file}: ${msg}`);

  // Gather the raw tables by dotted path, reporting tables nobody knows.
  const raw = new Map<TablePath, Raw>();
  const known = Object.keys(TABLES) as TablePath[];
  const walk = (table: Raw, prefix: string) => {
    for (const [k, v] of Object.entries(table)) {
      const p = prefix ? `${prefix}.${k}` : k;
      if (!isTable(v)) continue;
      if ((known as string[]).includes(p)) {
        raw.set(p as TablePath, v);
        walk(v, p);
      } else if (!prefix || (known as string[]).includes(prefix)) {
        const fields = prefix ? Object.keys(TABLES[prefix as TablePath].fields) : [];
        // A sub-table under a known table is unknown unless it is a field given the wrong type (checked below).
        if (!fields.includes(k)) {
          const siblings = known.filter((t) => t.split(".").length === p.split(".").length && t.startsWith(prefix));
          warn(`unknown table [${p}] ignored${didYouMean(p, siblings)}`);
        }
      }
    }
  };
  walk(doc, "");
  for (const [k, v] of Object.entries(doc)) {
    if (!isTable(v)) {
      if ((known as string[]).includes(k)) problems.push(`${k}: expected a table ([${k}]), found ${found(v)}`);
      else warn(`unknown key ${k} ignored${didYouMean(k, ["sandbox", "hypervisor"])}`);
    }
  }

  const hRaw = raw.get("hypervisor") ?? {};
  let kind = detectKind(hRaw, problems);
  if (hRaw.type !== undefined) {
    const c = check(TABLES.hypervisor.fields.type!, hRaw.type);
    if (c.ok) kind = c.value as HypervisorKind;
    else problems.push(`hypervisor.type: ${c.problem}`);
  }
  if (!kind) throw new ConfigError(file, problems, warnings);

  const config = defaultConfig(kind);
  config.file = file;
  const explicit = new Set<string>();
  const targetOf: Record<TablePath, Raw> = {
    sandbox: config.sandbox as unknown as Raw,
    hypervisor: config.hypervisor as unknown as Raw,
    "hypervisor.task": config.hypervisor.task as unknown as Raw,
    "hypervisor.virtiofsd": config.hypervisor.virtiofsd as unknown as Raw,
    "hypervisor.virtiofsd_conf": config.hypervisor.virtiofsd_conf as unknown as Raw,
  };
  // Kuasar's older key names are folded into their replacements before those are checked.
  const movedFrom = new Map<string, string>();
  for (const [name, f] of Object.entries(TABLES.hypervisor.fields)) {
    const v = hRaw[name];
    if (!f.deprecatedFor || v === undefined || v === "" || (f.only && !f.only.includes(kind))) continue;
    const [tablePath, key] = [
      f.deprecatedFor.slice(0, f.deprecatedFor.lastIndexOf(".")),
      f.deprecatedFor.split(".").pop()!,
    ];
    const table = raw.get(tablePath as TablePath) ?? {};
    if (table[key] === undefined) {
      table[key] = v;
      raw.set(tablePath as TablePath, table);
      movedFrom.set(f.deprecatedFor, `hypervisor.${name}`);
      warn(`hypervisor.${name} is Kuasar's older name for ${f.deprecatedFor}; its value is used there`);
    } else {
      warn(`hypervisor.${name} is Kuasar's older name for ${f.deprecatedFor}, which is also set; ${name} is ignored`);
    }
  }

  for (const [tablePath, { fields, only: tableOnly }] of Object.entries(TABLES) as [
    TablePath,
    (typeof TABLES)[TablePath],
  ][]) {
    const table = raw.get(tablePath);
    if (!table) continue;
    if (tableOnly && !tableOnly.includes(kind)) {
      warn(`[${tablePath}] applies to ${list(tableOnly)} only; ignored for ${kind}`);
      continue;
    }
    const subTables = known.filter((t) => t.startsWith(`${tablePath}.`)).map((t) => t.slice(tablePath.length + 1));
    for (const [name, v] of Object.entries(table)) {
      const keyPath = `${tablePath}.${name}`;
      const f = fields[name];
      if (!f) {
        // Unknown sub-tables were reported while walking the document.
        if (!subTables.includes(name) && !isTable(v)) {
          warn(`unknown key ${keyPath} ignored${didYouMean(name, Object.keys(fields))}`);
        }
        continue;
      }
      if (f.deprecatedFor || (tablePath === "hypervisor" && name === "type")) continue;
      if (f.only && !f.only.includes(kind)) {
        warn(`${keyPath} applies to ${list(f.only)} only; ignored for ${kind}`);
        continue;
      }
      const c = check(f, v);
      if (!c.ok) {
        const origin = movedFrom.get(keyPath);
        problems.push(`${origin ? `${origin} (moved to ${keyPath})` : keyPath}: ${c.problem}`);
        continue;
      }
      if (f.ignored) {
        if (JSON.stringify(c.value) !== JSON.stringify(targetOf[tablePath][name])) {
          warn(`${keyPath} has no effect: ${f.ignored}`);
        }
        continue;
      }
      targetOf[tablePath][name] = c.value;
      explicit.add(keyPath);
    }
  }

  crossCheck(config, kind, explicit, problems);
  if (problems.length > 0) throw new ConfigError(file, problems, warnings);
  return { config, warnings };
}

const QEMU_MACHINE = /^(pc|q35|microvm|pc-i440fx-[\d.]+|pc-q35-[\d.]+)$/;
const STRATOVIRT_MACHINE = /^(q35|virt|microvm)$/;

/** Rules between keys; defaults the user did not touch give way to the keys they did set. */
function crossCheck(config: Config, kind: HypervisorKind, explicit: Set<string>, problems: string[]): void {
  const h = config.hypervisor;
  const set = (k: string) => explicit.has(`hypervisor.${k}`);

  if (h.image_path !== "" && h.initrd_path !== "") {
    if (set("initrd_path") && !set("image_path")) h.image_path = "";
    else if (set("image_path") && !set("initrd_path")) h.initrd_path = "";
    else {
      problems.push(
        'hypervisor.image_path and hypervisor.initrd_path are both set: the guest boots from one; set the other to ""',
      );
    }
  }
  if (h.image_path === "" && h.initrd_path === "") {
    problems.push(
      "hypervisor.image_path and hypervisor.initrd_path are both empty: set one (the guest root filesystem)",
    );
  }

  if (kind === "qemu") {
    problems.push(...rangeProblems({ base: config.sandbox.helper_uid_base, count: config.sandbox.helper_uid_count }));
    if (set("path")) {
      if (!set("qemu_path")) h.qemu_path = h.path;
      else if (h.path !== h.qemu_path) {
        problems.push(
          `hypervisor.path = ${JSON.stringify(h.path)} and hypervisor.qemu_path = ${JSON.stringify(h.qemu_path)} differ: keep qemu_path`,
        );
      }
    }
    if (h.firmware !== "" && h.firmware_path !== "" && h.firmware !== h.firmware_path) {
      problems.push("hypervisor.firmware and hypervisor.firmware_path differ: keep firmware_path");
    }
    if (!QEMU_MACHINE.test(h.machine_type)) {
      problems.push(
        `hypervisor.machine_type: expected pc, q35, microvm, pc-i440fx-<version> or pc-q35-<version>, found ${JSON.stringify(h.machine_type)}`,
      );
    }
    const micro = h.machine_type === "microvm";
    if (micro !== (h.block_device_driver === "VirtioMmio")) {
      problems.push(
        `hypervisor.block_device_driver = "${h.block_device_driver}" does not fit machine_type = "${h.machine_type}": ` +
          "microvm has only virtio-mmio (VirtioMmio), the other machines use VirtioBlk or VirtioScsi",
      );
    }
    if (micro && !h.disable_nvdimm) {
      problems.push("hypervisor.disable_nvdimm = false: microvm has no NVDIMM; set it to true");
    }
    if (!h.disable_nvdimm && h.mem_slots === 0) {
      problems.push("hypervisor.disable_nvdimm = false needs mem_slots > 0: the NVDIMM occupies a memory slot");
    }
    const accel = h.machine_accelerators.split(",").filter((w) => ["auto", "kvm", "tcg"].includes(w.trim()));
    if (accel.length > 1) {
      problems.push(
        `hypervisor.machine_accelerators = ${JSON.stringify(h.machine_accelerators)} names ${accel.join(" and ")}: keep one of auto, kvm, tcg`,
      );
    }
    if (h.cpu_model === "") problems.push('hypervisor.cpu_model is empty: use "host" (tcg falls back to "max")');
    if (!h.use_vsock) {
      problems.push("hypervisor.use_vsock = false is not supported: the guest agent (vmm-task) listens only on vsock");
    }
    if (h.enable_vhost_user_store && !h.hugepages && h.memory_path === "") {
      problems.push("hypervisor.enable_vhost_user_store needs hugepages = true (or a memory_path on hugetlbfs)");
    }
    if (h.default_max_vcpus !== 0 && h.default_max_vcpus < h.vcpus) {
      problems.push(`hypervisor.default_max_vcpus = ${h.default_max_vcpus} is below vcpus = ${h.vcpus}`);
    }
  }
  if (kind === "cloud-hypervisor" && h.firmware !== "") {
    problems.push('hypervisor.firmware: cloud-hypervisor boots kernel_path directly here; set firmware = ""');
  }
  if (kind === "stratovirt") {
    const type = h.machine_type.split(",")[0]!.replace(/^type=/, "");
    if (!STRATOVIRT_MACHINE.test(type)) {
      problems.push(
        `hypervisor.machine_type: expected q35, virt or microvm (with options), found ${JSON.stringify(h.machine_type)}`,
      );
    }
    if (h.block_device_driver === "VirtioScsi") {
      problems.push('hypervisor.block_device_driver = "VirtioScsi" is not supported for stratovirt: use virtio-blk');
    }
    if ((type === "microvm") !== (h.block_device_driver === "VirtioMmio")) {
      problems.push(
        `hypervisor.block_device_driver = "${h.block_device_driver}" does not fit machine_type = "${h.machine_type}": ` +
          "microvm takes virtio-mmio, q35/virt take virtio-blk",
      );
    }
  }
}
