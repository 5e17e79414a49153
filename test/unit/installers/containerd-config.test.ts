import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { parse } from "smol-toml";
import {
  BLOCK_BEGIN,
  BLOCK_END,
  ConfigError,
  parseContainerdVersion,
  planMerge,
  splitManaged,
} from "../../../installers/node-installer/containerd-config.ts";

const execFileP = promisify(execFile);
const DROP_IN_FILE = "installers/containerd/kuasar-vmm.toml";
const dropIn = readFileSync(DROP_IN_FILE, "utf8");
const FILE = "/etc/containerd/config.toml";
const plan = (current: string | undefined) => planMerge(current, dropIn, { file: FILE, dropInFile: DROP_IN_FILE });

/** An operator's config with comments, odd spacing, dotted keys and other runtimes: all of it must survive. */
const OPERATOR = `# managed by hand
version = 3
root = "/var/lib/containerd"
disabled_plugins = []

[grpc]
  address = "/run/containerd/containerd.sock"   # trailing comment

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  containerd.default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[proxy_plugins.stargz]
  type = "snapshot"
  address = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
`;

const RUNTIME = ["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "kuasar-vmm"];

function at(obj: unknown, path: string[]): unknown {
  return path.reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
}

test("the block is appended after the operator's bytes and reads back as the drop-in's tables", () => {
  const p = plan(OPERATOR);
  assert.equal(p.changed, true);
  assert.equal(p.hadBlock, false);
  assert.ok(p.text.startsWith(`${OPERATOR}\n${BLOCK_BEGIN}\n`), "the operator's bytes come first, unchanged");
  assert.ok(p.text.endsWith(`${BLOCK_END}\n`));
  const merged = parse(p.text);
  const want = parse(dropIn);
  assert.deepEqual(at(merged, ["proxy_plugins", "vmm"]), at(want, ["proxy_plugins", "vmm"]));
  assert.deepEqual(at(merged, RUNTIME), at(want, RUNTIME));
  assert.equal(at(merged, ["proxy_plugins", "vmm", "type"]), "sandbox");
  assert.equal(at(merged, [...RUNTIME, "sandboxer"]), "vmm");
  // Every other setting as it was.
  assert.equal(at(merged, ["plugins", "io.containerd.cri.v1.runtime", "containerd", "default_runtime_name"]), "runc");
  assert.deepEqual(at(merged, ["proxy_plugins", "stargz"]), at(parse(OPERATOR), ["proxy_plugins", "stargz"]));
  assert.equal(splitManaged(p.text, FILE).operator, OPERATOR);
});

test("planning again on the merged file changes nothing", () => {
  const first = plan(OPERATOR);
  const again = plan(first.text);
  assert.equal(again.changed, false);
  assert.equal(again.hadBlock, true);
  assert.equal(again.text, first.text);
  assert.equal(again.operator, OPERATOR);
});

test("removal is exact whatever the operator's file ends with", () => {
  for (const original of [OPERATOR.trimEnd(), `${OPERATOR}\n\n`, "version = 3", "version = 3\n# tail comment"]) {
    const merged = plan(original).text;
    assert.equal(splitManaged(merged, FILE).operator, original, JSON.stringify(original.slice(-20)));
  }
});

test("text appended after the block by someone else is kept when the block is removed", () => {
  const merged = `${plan(OPERATOR).text}\n[proxy_plugins.other]\n  type = "snapshot"\n`;
  assert.equal(splitManaged(merged, FILE).operator, `${OPERATOR}\n[proxy_plugins.other]\n  type = "snapshot"\n`);
});

test("a missing, empty or comment-only config gets version = 3 inside the block", () => {
  for (const current of [undefined, "", "# nothing yet\n"]) {
    const p = plan(current);
    assert.equal(p.changed, true);
    assert.equal(parse(p.text).version, 3);
    assert.equal(splitManaged(p.text, FILE).operator, current ?? "");
  }
  assert.doesNotMatch(plan(OPERATOR).text.slice(OPERATOR.length), /^version/m, "no second version key");
});

test("a config that is not TOML is refused with the file and the line", () => {
  assert.throws(
    () => plan('version = 3\n[grpc\naddress = "x"\n'),
    (err: Error) =>
      err instanceof ConfigError &&
      err.message.includes(FILE) &&
      /line 2/.test(err.message) &&
      /not valid TOML/.test(err.message),
  );
});

test("version 2 and version-less configs are refused, naming containerd config migrate", () => {
  assert.throws(
    () => plan('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n'),
    /version = 2.*containerd config migrate/,
  );
  assert.throws(() => plan('root = "/var/lib/containerd"\n'), /no 'version' key.*containerd config migrate/);
});

test("keys the installer would write but did not are refused by name", () => {
  assert.throws(
    () => plan(`${OPERATOR}\n[proxy_plugins.vmm]\n  type = "sandbox"\n  address = "/elsewhere.sock"\n`),
    (err: Error) => err instanceof ConfigError && err.message.includes("already defines proxy_plugins.vmm"),
  );
  assert.throws(
    () =>
      plan(
        `${OPERATOR}\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kuasar-vmm]\n  runtime_type = "x"\n`,
      ),
    (err: Error) =>
      err.message.includes('already defines plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kuasar-vmm'),
  );
  assert.throws(
    () => plan('version = 3\nproxy_plugins = "none"\n'),
    /sets proxy_plugins to a string, where kuasar-vmm needs a table/,
  );
});

test("a table written inline, which a [header] cannot extend, is refused", () => {
  const inline = 'version = 3\nproxy_plugins = { stargz = { type = "snapshot", address = "/s.sock" } }\n';
  assert.throws(
    () => plan(inline),
    (err: Error) => err instanceof ConfigError && /inline/.test(err.message),
  );
});

test("a damaged block is refused, naming both markers", () => {
  const merged = plan(OPERATOR).text;
  const noEnd = merged.replace(`${BLOCK_END}\n`, "");
  assert.throws(() => splitManaged(noEnd, FILE), /damaged \(the line '# <<< kuasar-vmm' that ends it is missing\)/);
  assert.throws(() => plan(noEnd), /damaged/);
  const noBegin = merged.replace(`${BLOCK_BEGIN}\n`, "");
  assert.throws(() => plan(noBegin), /damaged \(its start or end marker is missing\)/);
  const twice = `${merged}\n${BLOCK_BEGIN}\n${BLOCK_END}\n`;
  assert.throws(() => plan(twice), /damaged \(it appears twice\)/);
});

test("containerd --version lines", () => {
  const cases: [string, string, number, number][] = [
    ["containerd github.com/containerd/containerd/v2 2.1.9+unknown ", "2.1.9+unknown", 2, 1],
    ["containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da", "1.7.27", 1, 7],
    ["containerd github.com/containerd/containerd v1.6.20 2806fc1057397dbaeefbea0e4e17bddfbd388f38", "1.6.20", 1, 6],
    ["containerd github.com/containerd/containerd/v2 v2.2.0 1c4457e00facac03ce1d75f7b6777a7a851e5c41", "2.2.0", 2, 2],
  ];
  for (const [line, text, major, minor] of cases)
    assert.deepEqual(parseContainerdVersion(line), { text, major, minor });
  assert.equal(parseContainerdVersion("containerd: command not found"), undefined);
});

test("containerd 2.1 itself reads the merged config: the vmm proxy plugin and the kuasar-vmm runtime are there", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "containerd-config-"));
  try {
    for (const [name, current] of [
      ["operator", OPERATOR],
      ["absent", undefined],
    ] as const) {
      const file = path.join(dir, `${name}.toml`);
      await writeFile(file, plan(current).text);
      const dump = await execFileP("containerd", ["--config", file, "config", "dump"]).catch((err: Error) => {
        throw new Error(
          `containerd --config ${file} config dump failed (${err.message}); containerd 2.1 is installed by scripts/install-prereqs.sh`,
        );
      });
      const text = dump.stdout;
      assert.match(
        text,
        /\[proxy_plugins\.vmm\]\n\s+type = 'sandbox'\n\s+address = '\/run\/vmm-sandboxer\.sock'/,
        name,
      );
      const runtime =
        /\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.containerd\.runtimes\.kuasar-vmm\]\n([\s\S]*?)\n\n/.exec(text);
      assert.ok(runtime, `${name}: the kuasar-vmm runtime is in containerd's view of the config`);
      assert.match(runtime[1]!, /sandboxer = 'vmm'/);
      assert.match(runtime[1]!, /runtime_type = 'io\.containerd\.kuasar-vmm\.v1'/);
      if (name === "operator") assert.match(text, /default_runtime_name = 'runc'/);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
