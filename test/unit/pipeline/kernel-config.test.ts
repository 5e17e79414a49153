import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { configure } from "../../../pipeline/kernel/config.ts";
import { mergeFragments, parseFragment } from "../../../pipeline/kernel/fragment.ts";

// configure() against a fake source tree whose "make" writes the .config a real kconfig run would.
let src: string;
before(async () => {
  src = await mkdtemp(path.join(os.tmpdir(), "kernel-config-"));
  await writeFile(path.join(src, "Kconfig"), "config A\nconfig B\nconfig C\nconfig D\n");
});
after(async () => {
  await rm(src, { recursive: true, force: true });
});

const requested = () =>
  mergeFragments([
    parseFragment("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n", "kernel-configs/fragments/t.config"),
  ]);

describe("configure", () => {
  test("micro: allnoconfig gets the requests as KCONFIG_ALLCONFIG, then olddefconfig, then the value check", async () => {
    const calls: string[][] = [];
    const text = await configure({
      srcDir: src,
      profile: "micro",
      requested: requested(),
      log: () => {},
      make: async (args) => {
        calls.push(args);
        if (args[0] === "allnoconfig")
          await writeFile(path.join(src, ".config"), "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n");
      },
    });
    assert.deepEqual(calls, [
      ["allnoconfig", `KCONFIG_ALLCONFIG=${path.join(src, "kuasar.fragment")}`],
      ["olddefconfig"],
    ]);
    assert.equal(
      await readFile(path.join(src, "kuasar.fragment"), "utf8"),
      "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n",
    );
    assert.match(text, /CONFIG_C=y/);
  });

  test("mini: the defconfig's own lines for requested symbols are replaced, not duplicated", async () => {
    await configure({
      srcDir: src,
      profile: "mini",
      requested: requested(),
      log: () => {},
      make: async (args) => {
        if (args[0] === "x86_64_defconfig") {
          await writeFile(path.join(src, ".config"), "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_D=y\n");
        }
      },
    });
    assert.equal(
      await readFile(path.join(src, ".config"), "utf8"),
      "CONFIG_D=y\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n",
    );
  });

  test("a symbol kconfig dropped fails the build, naming the fragment line", async () => {
    await assert.rejects(
      configure({
        srcDir: src,
        profile: "micro",
        requested: requested(),
        log: () => {},
        make: async (args) => {
          if (args[0] === "allnoconfig") await writeFile(path.join(src, ".config"), "CONFIG_A=y\n");
        },
      }),
      /1 requested kernel config symbol\(s\)[\s\S]*t\.config:3: CONFIG_C=y requested, but it is absent/,
    );
  });

  test("an unknown symbol fails before kconfig runs", async () => {
    const withTypo = mergeFragments([parseFragment("CONFIG_A=y\nCONFIG_AA=y\n", "t.config")]);
    let ran = false;
    await assert.rejects(
      configure({
        srcDir: src,
        profile: "micro",
        requested: withTypo,
        log: () => {},
        make: async () => {
          ran = true;
        },
      }),
      /t\.config:2: CONFIG_AA \(y\)/,
    );
    assert.equal(ran, false);
  });
});
