import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { installCli } from "../../../installers/dist/cli.ts";
import { layout } from "../../../installers/install-vmm.ts";

let tmp: string;
let bin: string;

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "dist-install-cli-"));
  bin = path.join(tmp, "bin");
  await mkdir(bin);
  for (const h of ["qemu", "cloud-hypervisor", "stratovirt"] as const)
    for (const e of layout(h)) await writeFile(path.join(bin, e.src), `artifact ${e.src}\n`);
});
after(() => rm(tmp, { recursive: true, force: true }));

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await installCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

test("install.sh's options: the hypervisor's config, then an uninstall that leaves the empty root empty", async () => {
  const root = path.join(tmp, "root");
  await mkdir(root);
  const i = await run("--bin-dir", bin, "--dest-dir", root, "--hypervisor", "cloud-hypervisor");
  assert.equal(i.code, 0, i.err);
  assert.match(i.out, /installed \d+ files under .*root \(config for cloud-hypervisor\)/);
  assert.equal(await readFile(path.join(root, "var/lib/kuasar/config.toml"), "utf8"), "artifact config_clh.toml\n");
  const u = await run("--bin-dir", bin, "--dest-dir", root, "--uninstall");
  assert.equal(u.code, 0, u.err);
  assert.deepEqual(await readdir(root), []);
});

test("bad usage exits 2 with the usage; --help exits 0", async () => {
  for (const [argv, why] of [
    [
      ["--bin-dir", bin, "--hypervisor", "firecracker"],
      /--hypervisor must be one of qemu, cloud-hypervisor, stratovirt/,
    ],
    [["--bin-dir", bin, "--uninstall", "--hypervisor", "qemu"], /--hypervisor has no meaning with --uninstall/],
    [["--dest-dir", "/tmp/x"], /--bin-dir is missing/],
    [["--bin-dir", bin, "--destdir", "/x"], /Unknown option '--destdir'/],
  ] as const) {
    const r = await run(...argv);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.err, why);
    assert.match(r.err, /usage: \.\/install\.sh/);
  }
  const h = await run("--bin-dir", bin, "--help");
  assert.equal(h.code, 0);
  assert.match(h.out, /--uninstall removes exactly what install/);
});

test("a failed install exits 1 and says what went wrong", async () => {
  const file = path.join(tmp, "not-a-dir");
  await writeFile(file, "");
  const r = await run("--bin-dir", bin, "--dest-dir", file);
  assert.equal(r.code, 1);
  assert.match(r.err, /^install\.sh: .*not-a-dir/);
  const missing = await run("--bin-dir", path.join(tmp, "nowhere"), "--dest-dir", path.join(tmp, "r2"));
  assert.equal(missing.code, 1);
  assert.match(missing.err, /nowhere\/vmm-sandboxer is missing/);
});
