import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fragmentFiles, loadRequest, MANDATORY_SYMBOLS } from "../../../pipeline/kernel/config.ts";
import { FragmentError, mergeFragments, parseFragment, renderAssignment } from "../../../pipeline/kernel/fragment.ts";

describe("parseFragment", () => {
  test("reads y/m/n, 'is not set', strings and numbers with their line numbers; skips comments and blanks", () => {
    const text = [
      "# why this group exists",
      "CONFIG_A=y",
      "",
      "CONFIG_B=m",
      "# CONFIG_C is not set",
      "CONFIG_D=n",
      'CONFIG_E="console=ttyS0 \\"quoted\\""',
      "CONFIG_F=64",
      "CONFIG_G=0x1000000",
      "CONFIG_H=-1",
      "   CONFIG_I=y   ",
    ].join("\n");
    assert.deepEqual(
      parseFragment(text, "f.config").map((a) => [a.symbol, a.value, a.line]),
      [
        ["A", "y", 2],
        ["B", "m", 4],
        ["C", "n", 5],
        ["D", "n", 6],
        ["E", '"console=ttyS0 \\"quoted\\""', 7],
        ["F", "64", 8],
        ["G", "0x1000000", 9],
        ["H", "-1", 10],
        ["I", "y", 11],
      ],
    );
    assert.equal(parseFragment(text, "f.config")[0]!.file, "f.config");
  });

  test("rejects a line that is neither an assignment nor a comment, naming file:line", () => {
    assert.throws(
      () => parseFragment("CONFIG_A=y\nVIRTIO=y\n", "x.config"),
      /x\.config:2: expected 'CONFIG_NAME=value'/,
    );
  });

  test("rejects bad values: unquoted words, trailing comments, unterminated strings", () => {
    assert.throws(() => parseFragment("CONFIG_A=yes", "x.config"), /x\.config:1: CONFIG_A has value 'yes'/);
    assert.throws(() => parseFragment("CONFIG_A=y # why", "x.config"), /x\.config:1: CONFIG_A has value 'y # why'/);
    assert.throws(() => parseFragment('\nCONFIG_A="open', "x.config"), /x\.config:2: CONFIG_A has value '"open'/);
  });

  test("renders requests the way .config spells them", () => {
    assert.equal(renderAssignment("A", "y"), "CONFIG_A=y");
    assert.equal(renderAssignment("A", "n"), "# CONFIG_A is not set");
    assert.equal(renderAssignment("S", '"x"'), 'CONFIG_S="x"');
  });
});

describe("mergeFragments", () => {
  test("the same value from two files is one request (the first one seen)", () => {
    const merged = mergeFragments([
      parseFragment("CONFIG_A=y\n", "a.config"),
      parseFragment("\nCONFIG_A=y\n", "b.config"),
    ]);
    assert.equal(merged.size, 1);
    assert.deepEqual(merged.get("A"), { symbol: "A", value: "y", file: "a.config", line: 1 });
  });

  test("different values are rejected before merging, every conflict listed with both file:line", () => {
    const err = (() => {
      try {
        mergeFragments([
          parseFragment("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n", "a.config"),
          parseFragment("# CONFIG_A is not set\nCONFIG_B=y\n", "b.config"),
          parseFragment("\n\nCONFIG_C=m\n", "c.config"),
        ]);
      } catch (e) {
        return e as Error;
      }
      assert.fail("conflicts were not detected");
    })();
    assert.ok(err instanceof FragmentError);
    assert.match(err.message, /disagree on 2 symbol/);
    assert.match(err.message, /CONFIG_A: y at a\.config:1, 'is not set' at b\.config:1/);
    assert.match(err.message, /CONFIG_C: y at a\.config:3, m at c\.config:3/);
    assert.doesNotMatch(err.message, /CONFIG_B/);
  });

  test("a conflict inside one file is caught too", () => {
    assert.throws(
      () => mergeFragments([parseFragment("CONFIG_A=y\nCONFIG_A=m\n", "a.config")]),
      /CONFIG_A: y at a\.config:1, m at a\.config:2/,
    );
  });
});

describe("fragment set", () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  async function repoWith(fragments: Record<string, string>): Promise<string> {
    const repo = await mkdtemp(path.join(os.tmpdir(), "kernel-fragments-"));
    dirs.push(repo);
    for (const [rel, text] of Object.entries(fragments)) {
      await mkdir(path.dirname(path.join(repo, rel)), { recursive: true });
      await writeFile(path.join(repo, rel), text);
    }
    return repo;
  }
  const vsock = MANDATORY_SYMBOLS.map((s) => `CONFIG_${s}=y`).join("\n");

  test("all fragments in order, then one profile per selected hypervisor", async () => {
    const repo = await repoWith({
      "kernel-configs/fragments/vsock.config": vsock,
      "kernel-configs/fragments/base.config": "CONFIG_A=y\n",
      "kernel-configs/fragments/README.md": "not a fragment",
      "kernel-configs/hypervisors/qemu.config": "CONFIG_A=y\n",
      "kernel-configs/hypervisors/stratovirt.config": "CONFIG_B=y\n",
    });
    assert.deepEqual(await fragmentFiles(repo, ["stratovirt", "qemu", "qemu"]), [
      "kernel-configs/fragments/base.config",
      "kernel-configs/fragments/vsock.config",
      "kernel-configs/hypervisors/qemu.config",
      "kernel-configs/hypervisors/stratovirt.config",
    ]);
    const { requested } = await loadRequest(repo, ["qemu"]);
    assert.equal(requested.get("A")?.file, "kernel-configs/fragments/base.config");
  });

  test("a hypervisor profile that conflicts with a fragment is reported with both places", async () => {
    const repo = await repoWith({
      "kernel-configs/fragments/vsock.config": `${vsock}\nCONFIG_ACPI=y\n`,
      "kernel-configs/hypervisors/qemu.config": "# CONFIG_ACPI is not set\n",
    });
    await assert.rejects(
      loadRequest(repo, ["qemu"]),
      /CONFIG_ACPI: y at kernel-configs\/fragments\/vsock\.config:5, 'is not set' at kernel-configs\/hypervisors\/qemu\.config:1/,
    );
  });

  test("a fragment set without the vsock options is refused", async () => {
    const repo = await repoWith({
      "kernel-configs/fragments/vsock.config": "CONFIG_VSOCKETS=y\n# CONFIG_VSOCKETS_DIAG is not set\n",
      "kernel-configs/hypervisors/qemu.config": "",
    });
    await assert.rejects(
      loadRequest(repo, ["qemu"]),
      /must request CONFIG_VSOCKETS_DIAG=y, CONFIG_VIRTIO_VSOCKETS=y, CONFIG_VIRTIO_VSOCKETS_COMMON=y/,
    );
  });

  test("an unknown hypervisor profile or an empty selection is an error", async () => {
    const repo = await repoWith({ "kernel-configs/fragments/vsock.config": vsock });
    await assert.rejects(
      loadRequest(repo, ["qemu"]),
      /cannot read kernel config fragment kernel-configs\/hypervisors\/qemu\.config: ENOENT/,
    );
    await assert.rejects(loadRequest(repo, []), /no hypervisor selected/);
  });

  test("the repository's own fragments merge cleanly for every hypervisor", async () => {
    const repo = path.resolve(import.meta.dirname, "../../..");
    for (const hv of [
      ["qemu"],
      ["cloud-hypervisor"],
      ["stratovirt"],
      ["qemu", "cloud-hypervisor", "stratovirt"],
    ] as const) {
      const { requested } = await loadRequest(repo, [...hv]);
      for (const s of MANDATORY_SYMBOLS) assert.equal(requested.get(s)?.value, "y");
    }
  });
});
