import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { describeSchema } from "../../../../runtime/sandboxer/config/describe.ts";
import { ConfigError, loadConfig, parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { defaultConfig } from "../../../../runtime/sandboxer/config/schema.ts";
import { closest, editDistance } from "../../../../runtime/sandboxer/config/suggest.ts";
import { HYPERVISORS } from "../../../../runtime/sandboxer/hypervisor/names.ts";

const repo = path.resolve(import.meta.dirname, "../../../..");
const fixture = (name: string) => path.join(import.meta.dirname, "../fixtures", name);
const INSTALLED = {
  qemu: "installers/config/config_qemu_x86_64.toml",
  "cloud-hypervisor": "installers/config/config_clh.toml",
  stratovirt: "installers/config/config_stratovirt_x86_64.toml",
} as const;

/** The ConfigError a document produces. */
function problems(text: string): ConfigError {
  try {
    parseConfig(text, "/etc/kuasar/test.toml");
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  assert.fail("expected a ConfigError");
}

describe("shipped configurations", () => {
  for (const hv of HYPERVISORS) {
    test(`${INSTALLED[hv]} loads without warnings and is exactly defaultConfig("${hv}")`, async () => {
      const file = path.join(repo, INSTALLED[hv]);
      const { config, warnings } = await loadConfig(file);
      assert.deepEqual(warnings, []);
      assert.equal(config.file, file);
      assert.deepEqual({ ...config, file: undefined }, defaultConfig(hv));
    });
  }

  test("a Kuasar-style QEMU file with all of Kuasar's keys loads; older keys move, dead ones are named", async () => {
    const { config, warnings } = await loadConfig(fixture("kuasar-qemu-keys.toml"));
    const h = config.hypervisor;
    assert.equal(h.type, "qemu");
    // Only initrd_path is set: it replaces the default image instead of clashing with it.
    assert.equal(h.initrd_path, "/opt/kuasar/kuasar.initrd");
    assert.equal(h.image_path, "");
    assert.equal(h.virtiofsd.path, "/usr/bin/virtiofsd");
    assert.equal(h.virtiofsd.cache, "always");
    assert.deepEqual(h.virtiofs_extra_args, ["-o", "xattr"]);
    assert.equal(h.default_max_vcpus, 4);
    assert.equal(h.virtio_9p_multidevs, "remap");
    assert.equal(h.machine_accelerators, "");
    assert.equal(config.sandbox.log_level, "debug");
    assert.equal(warnings.length, 3, warnings.join("\n"));
    assert.match(
      warnings[0]!,
      /kuasar-qemu-keys\.toml: hypervisor\.virtiofs_daemon_path is Kuasar's older name for hypervisor\.virtiofsd\.path/,
    );
    assert.match(warnings[1]!, /hypervisor\.virtiofs_cache is Kuasar's older name for hypervisor\.virtiofsd\.cache/);
    assert.match(warnings[2]!, /hypervisor\.virtiofs_cache_size has no effect/);
  });
});

describe("problems are collected and name file, key, expectation and finding", () => {
  test("every wrong value in one error, unknown keys and tables as did-you-mean warnings", async () => {
    const file = fixture("mixed-errors.toml");
    const err = await loadConfig(file).then(
      () => assert.fail("expected a ConfigError"),
      (e: unknown) => e as ConfigError,
    );
    assert.ok(err instanceof ConfigError);
    assert.equal(err.file, file);
    assert.deepEqual(err.problems, [
      'sandbox.log_level: expected one of "", "error", "warn", "info", "debug", "trace", found "verbose" (string)',
      'sandbox.enable_tracing: expected boolean, found "yes" (string)',
      'hypervisor.vcpus: expected integer 1..255, found "two" (string); write it without quotes',
      "hypervisor.memory_in_mb: expected integer 64..1048576, found 1.5 (float)",
      "hypervisor.default_bridges: out of range: expected integer 0..5, found 9",
      'hypervisor.share_fs: expected one of "Virtio9P", "VirtioFS", found "virtiofs" (string); did you mean VirtioFS?',
      'hypervisor.kernel_path: must be an absolute path, found "vmlinux.bin" (string)',
      'hypervisor.virtiofsd.cache: expected one of "never", "auto", "always", "metadata", found "nver" (string); did you mean never?',
      "hypervisor.virtiofsd.thread_pool_size: out of range: expected integer 0..1024, found -1",
    ]);
    assert.deepEqual(err.warnings, [
      `${file}: unknown table [hypervisr] ignored; did you mean hypervisor?`,
      `${file}: unknown key hypervisor.vcpu ignored; did you mean vcpus?`,
    ]);
    assert.match(err.message, new RegExp(`^invalid configuration ${file}:\\n  - sandbox\\.log_level`));
  });

  test("a TOML syntax error gives the line and column", () => {
    const err = problems('[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\nvcpus = = 2\n');
    assert.equal(err.problems.length, 1);
    assert.match(err.problems[0]!, /^line 3, column \d+: /);
  });

  test("a missing file given explicitly is an error that says what to do", async () => {
    const err = await loadConfig("/nonexistent/kuasar/config.toml").catch((e: unknown) => e as ConfigError);
    assert.ok(err instanceof ConfigError);
    assert.match(
      err.message,
      /\/nonexistent\/kuasar\/config\.toml:\n {2}- no such file: create it .* or pass another --config/,
    );
  });

  test("an unknown table is reported once, with the closest known table", () => {
    const { warnings } = parseConfig(
      '[hypervisor]\ntype = "qemu"\n[hypervisor.tsk]\ndebug = true\n[hypervisor.virtiofsd.x]\na = 1\n',
      "t.toml",
    );
    assert.deepEqual(warnings, [
      "t.toml: unknown table [hypervisor.tsk] ignored; did you mean hypervisor.task?",
      "t.toml: unknown table [hypervisor.virtiofsd.x] ignored",
    ]);
  });

  test("a scalar where a table belongs, and a table where a scalar belongs", () => {
    const err = problems("hypervisor = 3\n");
    assert.match(err.problems.join("\n"), /hypervisor: expected a table \(\[hypervisor\]\), found 3 \(integer\)/);
    const err2 = problems('[hypervisor]\ntype = "qemu"\nvcpus = { n = 2 }\n');
    assert.deepEqual(err2.problems, ["hypervisor.vcpus: expected integer 1..255, found a table"]);
  });
});

describe("which hypervisor", () => {
  const kind = (text: string) => parseConfig(text, "t.toml").config.hypervisor.type;
  test("qemu_path means qemu; path naming the binary picks cloud-hypervisor, stratovirt or qemu", () => {
    assert.equal(kind('[hypervisor]\nqemu_path = "/usr/bin/qemu-kvm"\n'), "qemu");
    assert.equal(kind('[hypervisor]\npath = "/usr/local/bin/cloud-hypervisor"\n'), "cloud-hypervisor");
    assert.equal(kind('[hypervisor]\npath = "/usr/bin/stratovirt"\n'), "stratovirt");
    assert.equal(kind('[hypervisor]\npath = "/opt/bin/qemu-system-x86_64"\n'), "qemu");
  });

  test("an explicit type wins and makes other hypervisors' keys warnings", () => {
    const { config, warnings } = parseConfig(
      '[hypervisor]\ntype = "cloud-hypervisor"\npath = "/opt/vmm"\nmachine_type = "q35"\n[hypervisor.virtiofsd_conf]\npath = "/x"\n',
      "t.toml",
    );
    assert.equal(config.hypervisor.type, "cloud-hypervisor");
    assert.equal(config.hypervisor.path, "/opt/vmm");
    assert.deepEqual(warnings, [
      "t.toml: hypervisor.machine_type applies to qemu and stratovirt only; ignored for cloud-hypervisor",
      "t.toml: [hypervisor.virtiofsd_conf] applies to stratovirt only; ignored for cloud-hypervisor",
    ]);
  });

  test("nothing to go by, or contradicting keys, is an error naming the type key", () => {
    assert.match(problems("[sandbox]\n").problems[0]!, /cannot tell which hypervisor .* set \[hypervisor\] type = /);
    assert.match(
      problems('[hypervisor]\nqemu_path = "/usr/bin/qemu"\npath = "/usr/bin/stratovirt"\n').problems[0]!,
      /hypervisor\.qemu_path and hypervisor\.path = "\/usr\/bin\/stratovirt" name different hypervisors/,
    );
    assert.match(
      problems('[hypervisor]\ntype = "firecracker"\n').problems[0]!,
      /^hypervisor\.type: expected one of "qemu", "cloud-hypervisor", "stratovirt", found "firecracker"/,
    );
  });
});

describe("values and rules between keys", () => {
  const qemu = (extra: string) => parseConfig(`[hypervisor]\ntype = "qemu"\n${extra}`, "t.toml");

  test("Kuasar's alternative spellings are normalised", () => {
    const h = qemu(
      'block_device_driver = "virtio-scsi"\nshare_fs = "virtio-fs"\n[hypervisor.virtiofsd]\ncache = "none"\nlog_level = "err"\n',
    ).config.hypervisor;
    assert.equal(h.block_device_driver, "VirtioScsi");
    assert.equal(h.share_fs, "VirtioFS");
    assert.equal(h.virtiofsd.cache, "never");
    assert.equal(h.virtiofsd.log_level, "error");
  });

  test("image and initrd: setting one replaces the other's default, setting both is an error", () => {
    assert.equal(qemu('initrd_path = "/i"\n').config.hypervisor.image_path, "");
    const s = parseConfig('[hypervisor]\npath = "/usr/bin/stratovirt"\nimage_path = "/img"\n', "t.toml").config
      .hypervisor;
    assert.deepEqual([s.image_path, s.initrd_path], ["/img", ""]);
    assert.match(
      problems('[hypervisor]\ntype = "qemu"\nimage_path = "/a"\ninitrd_path = "/b"\n').problems[0]!,
      /both set/,
    );
    assert.match(problems('[hypervisor]\ntype = "qemu"\nimage_path = ""\n').problems[0]!, /both empty/);
  });

  test("qemu rules: path is qemu_path, machine fits the disk transport, vsock stays on", () => {
    assert.equal(qemu('path = "/opt/qemu"\n').config.hypervisor.qemu_path, "/opt/qemu");
    const p = problems(
      '[hypervisor]\ntype = "qemu"\nmachine_type = "microvm"\nuse_vsock = false\nmachine_accelerators = "kvm,tcg"\nvcpus = 4\ndefault_max_vcpus = 2\nenable_vhost_user_store = true\n',
    ).problems;
    assert.equal(p.length, 5, p.join("\n"));
    assert.match(p[0]!, /block_device_driver = "VirtioBlk" does not fit machine_type = "microvm"/);
    assert.match(p[1]!, /machine_accelerators = "kvm,tcg" names kvm and tcg/);
    assert.match(p[2]!, /use_vsock = false is not supported/);
    assert.match(p[3]!, /enable_vhost_user_store needs hugepages/);
    assert.match(p[4]!, /default_max_vcpus = 2 is below vcpus = 4/);
    assert.match(
      problems('[hypervisor]\ntype = "qemu"\nmachine_type = "isapc"\n').problems[0]!,
      /machine_type: expected pc, q35, microvm/,
    );
    assert.equal(
      qemu('machine_accelerators = "tcg,kernel_irqchip=on"\n').config.hypervisor.machine_accelerators,
      "tcg,kernel_irqchip=on",
    );
  });

  test("stratovirt and cloud-hypervisor rules", () => {
    assert.match(
      problems('[hypervisor]\npath = "/usr/local/bin/cloud-hypervisor"\nfirmware = "/fw"\n').problems[0]!,
      /hypervisor\.firmware: cloud-hypervisor boots kernel_path directly/,
    );
    assert.match(
      problems('[hypervisor]\npath = "/usr/bin/stratovirt"\nmachine_type = "pc"\n').problems[0]!,
      /expected q35, virt or microvm/,
    );
    const micro = parseConfig(
      '[hypervisor]\npath = "/usr/bin/stratovirt"\nmachine_type = "microvm"\nblock_device_driver = "virtio-mmio"\n',
      "t.toml",
    );
    assert.equal(micro.config.hypervisor.block_device_driver, "VirtioMmio");
  });

  test("ignored Kuasar keys warn only when set to something other than their default", () => {
    assert.deepEqual(qemu("mem_offset = 0\nenable_swap = false\n").warnings, []);
    assert.deepEqual(qemu("enable_swap = true\n").warnings, [
      "t.toml: hypervisor.enable_swap has no effect: guest memory is never locked, so the host may swap it anyway",
    ]);
  });
});

describe("schema", () => {
  test("every key is documented with a type and a default for each hypervisor that uses it", () => {
    const rows = describeSchema();
    assert.ok(rows.length > 50);
    for (const r of rows) {
      assert.ok(r.doc.length > 10, `${r.key} has no documentation`);
      assert.ok(r.hypervisors.length > 0, `${r.key} applies to no hypervisor`);
      assert.deepEqual(Object.keys(r.defaults).sort(), [...r.hypervisors].sort(), r.key);
    }
    const byKey = new Map(rows.map((r) => [r.key, r]));
    assert.deepEqual(byKey.get("hypervisor.memory_in_mb")?.defaults, {
      qemu: 512,
      "cloud-hypervisor": 1024,
      stratovirt: 1024,
    });
    assert.deepEqual(byKey.get("hypervisor.vsock_mode")?.hypervisors, ["qemu"]);
    assert.equal(byKey.get("hypervisor.virtiofs_cache")?.deprecatedFor, "hypervisor.virtiofsd.cache");
    assert.deepEqual(byKey.get("hypervisor.virtiofsd_conf.path")?.hypervisors, ["stratovirt"]);
  });

  test("defaults are independent copies", () => {
    const a = defaultConfig("qemu");
    a.hypervisor.virtiofs_extra_args.push("x");
    assert.deepEqual(defaultConfig("qemu").hypervisor.virtiofs_extra_args, []);
  });

  test("edit distance and the closest key", () => {
    assert.equal(editDistance("kitten", "sitting"), 3);
    assert.equal(closest("memory_in_MB", ["memory_in_mb", "vcpus"]), "memory_in_mb");
    assert.equal(closest("completely_unrelated", ["vcpus", "path"]), undefined);
  });
});

describe("reading files", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-config-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("an unreadable path is an error naming it", async () => {
    const err = await loadConfig(dir).catch((e: unknown) => e as ConfigError);
    assert.ok(err instanceof ConfigError);
    assert.match(err.problems[0]!, /cannot read it: EISDIR/);
  });

  test("a file with only [hypervisor] type gets every other key from the defaults", async () => {
    const file = path.join(dir, "min.toml");
    await writeFile(file, '[hypervisor]\ntype = "stratovirt"\n');
    const { config } = await loadConfig(file);
    assert.deepEqual({ ...config, file: undefined }, defaultConfig("stratovirt"));
  });
});
