import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { parseFragment } from "../../../pipeline/kernel/fragment.ts";
import {
  formatMismatches,
  formatUnknown,
  kconfigSymbols,
  parseDotConfig,
  unknownSymbols,
  verifyConfig,
} from "../../../pipeline/kernel/verify.ts";

const dotConfig = [
  "#",
  "# Automatically generated file; DO NOT EDIT.",
  "#",
  "CONFIG_64BIT=y",
  "CONFIG_VIRTIO=y",
  "CONFIG_VIRTIO_NET=m",
  "# CONFIG_MODULES is not set",
  'CONFIG_CMDLINE="console=ttyS0"',
  "CONFIG_NR_CPUS=64",
  "CONFIG_EXPERT=y",
].join("\n");

describe("parseDotConfig", () => {
  test("values as written, 'is not set' as n, comments ignored", () => {
    const c = parseDotConfig(dotConfig);
    assert.equal(c.get("64BIT"), "y");
    assert.equal(c.get("VIRTIO_NET"), "m");
    assert.equal(c.get("MODULES"), "n");
    assert.equal(c.get("CMDLINE"), '"console=ttyS0"');
    assert.equal(c.get("NR_CPUS"), "64");
    assert.equal(c.has("VIRTIO_BLK"), false);
  });
});

describe("verifyConfig (value-exact)", () => {
  const fragment = [
    "CONFIG_64BIT=y", // 1 ok
    "CONFIG_VIRTIO_BLK=y", // 2 dropped by kconfig (absent)
    "CONFIG_VIRTIO_NET=y", // 3 wrong value (m)
    "# CONFIG_EXPERT is not set", // 4 expected off but set
    "# CONFIG_MODULES is not set", // 5 ok
    "# CONFIG_BLK_DEV is not set", // 6 ok: absent counts as off
    'CONFIG_CMDLINE="console=ttyS0"', // 7 ok
    'CONFIG_CMDLINE_X="quiet"', // 8 absent string
    "CONFIG_NR_CPUS=64", // 9 ok
  ].join("\n");
  const requested = parseFragment(fragment, "kernel-configs/fragments/t.config");

  test("reports every mismatch at once, in file/line order, with the actual value", () => {
    const mismatches = verifyConfig(requested, parseDotConfig(dotConfig));
    assert.deepEqual(
      mismatches.map((m) => [m.request.symbol, m.request.line, m.actual]),
      [
        ["VIRTIO_BLK", 2, undefined],
        ["VIRTIO_NET", 3, "m"],
        ["EXPERT", 4, "y"],
        ["CMDLINE_X", 8, undefined],
      ],
    );
  });

  test("the message names fragment file:line, what was asked and what kconfig did", () => {
    const msg = formatMismatches(verifyConfig(requested, parseDotConfig(dotConfig)), "/b/.config");
    assert.match(msg, /^4 requested kernel config symbol\(s\) did not get their value in \/b\/\.config/);
    assert.match(msg, /t\.config:2: CONFIG_VIRTIO_BLK=y requested, but it is absent \(a dependency is off/);
    assert.match(msg, /t\.config:3: CONFIG_VIRTIO_NET=y requested, but it is m/);
    assert.match(msg, /t\.config:4: # CONFIG_EXPERT is not set requested, but it is y/);
    assert.match(msg, /t\.config:8: CONFIG_CMDLINE_X="quiet" requested, but it is absent/);
  });

  test("a requested y that kconfig wrote as 'is not set' is a mismatch", () => {
    const [m] = verifyConfig(parseFragment("CONFIG_MODULES=y", "a.config"), parseDotConfig(dotConfig));
    assert.equal(m?.actual, "n");
    assert.match(formatMismatches([m!], ".config"), /a\.config:1: CONFIG_MODULES=y requested, but it is not set/);
  });

  test("a satisfied request set gives no mismatches", () => {
    assert.deepEqual(
      verifyConfig(parseFragment("CONFIG_64BIT=y\nCONFIG_VIRTIO_NET=m", "a"), parseDotConfig(dotConfig)),
      [],
    );
  });
});

describe("unknown symbols", () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  async function fakeTree(): Promise<string> {
    const root = await mkdtemp(path.join(os.tmpdir(), "fake-kconfig-"));
    dirs.push(root);
    await mkdir(path.join(root, "drivers/virtio"), { recursive: true });
    await mkdir(path.join(root, "arch/x86"), { recursive: true });
    await writeFile(
      path.join(root, "Kconfig"),
      'mainmenu "fake"\nsource "drivers/virtio/Kconfig"\nconfig 64BIT\n\tbool\n',
    );
    await writeFile(
      path.join(root, "drivers/virtio/Kconfig"),
      'menuconfig VIRTIO_MENU\n\tbool "Virtio drivers"\nif VIRTIO_MENU\n\tconfig VIRTIO_PCI\n\ttristate "PCI"\nendif\n# config NOT_A_SYMBOL (comment)\n',
    );
    await writeFile(path.join(root, "arch/x86/Kconfig.debug"), "config X86_DEBUG_FPU\n\tbool\n");
    // Only Kconfig* files declare symbols.
    await writeFile(path.join(root, "drivers/virtio/Makefile"), "config VIRTIO_BLK\n");
    return root;
  }

  test("collects config and menuconfig names from every Kconfig* file", async () => {
    const known = await kconfigSymbols(await fakeTree());
    assert.deepEqual([...known].sort(), ["64BIT", "VIRTIO_MENU", "VIRTIO_PCI", "X86_DEBUG_FPU"]);
  });

  test("a requested symbol no Kconfig declares is reported with file:line", async () => {
    const root = await fakeTree();
    const requested = parseFragment(
      "CONFIG_VIRTIO_PCI=y\n\nCONFIG_VIRTIO_BLK=y\n# CONFIG_VIRTIO_PCII is not set\n",
      "v.config",
    );
    const unknown = unknownSymbols(requested, await kconfigSymbols(root));
    assert.deepEqual(
      unknown.map((a) => [a.symbol, a.line]),
      [
        ["VIRTIO_BLK", 3],
        ["VIRTIO_PCII", 4],
      ],
    );
    const msg = formatUnknown(unknown, root);
    assert.match(msg, /v\.config:3: CONFIG_VIRTIO_BLK \(y\)/);
    assert.match(msg, /v\.config:4: CONFIG_VIRTIO_PCII \('is not set'\)/);
  });

  test("a directory without Kconfig files is not a kernel tree", async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), "no-kconfig-"));
    dirs.push(root);
    await assert.rejects(
      kconfigSymbols(root),
      /no Kconfig files with config entries below .*is it a kernel source tree/,
    );
  });
});
