import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { extract } from "tar-stream";
import { IMAGE_REPO } from "../../../installers/node-installer/image-name.ts";
import { ARTIFACTS_DIR, INSTALLER_PATH, NODE_PATH } from "../../../installers/node-installer/paths.ts";
import {
  artifactNames,
  buildNodeInstallerImage,
  bundleInstaller,
  RUNTIME_ELFS,
} from "../../../pipeline/installer-image/image.ts";

const EPOCH = 1700000000;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface TarEntry {
  name: string;
  type: string;
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
  linkname?: string;
  data: Buffer;
}

async function readTar(data: Buffer): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("entry", (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c) => {
        chunks.push(c as Buffer);
      });
      stream.on("end", () => {
        out.push({
          name: h.name,
          type: h.type ?? "file",
          mode: h.mode ?? 0,
          mtime: (h.mtime?.getTime() ?? 0) / 1000,
          uid: h.uid ?? -1,
          gid: h.gid ?? -1,
          linkname: h.linkname ?? undefined,
          data: Buffer.concat(chunks),
        });
        next();
      });
    });
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  ex.end(data);
  await done;
  return out;
}

let tmp: string;
let archive: Buffer;
const artifacts: Record<string, string> = {};

async function build(name: string): Promise<Buffer> {
  const scratch = path.join(tmp, `scratch-${name}`);
  await mkdir(scratch);
  const out = path.join(tmp, `${name}.tar`);
  await buildNodeInstallerImage({
    artifacts,
    installer: path.join(tmp, "installer.cjs"),
    elfs: RUNTIME_ELFS.map((e) => e.path),
    version: "0.0.0-test",
    epoch: EPOCH,
    out,
    scratch,
  });
  return readFile(out);
}

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "node-installer-image-"));
  await mkdir(path.join(tmp, "bin"));
  for (const name of artifactNames()) {
    artifacts[name] = path.join(tmp, "bin", name);
    await writeFile(artifacts[name], `artifact ${name}\n`, { mode: name === "vmm-sandboxer" ? 0o755 : 0o644 });
  }
  // As the sandboxer stage publishes it: the build's own node, which the runtime layer also carries.
  artifacts.node = NODE_PATH;
  await bundleInstaller(path.join(tmp, "installer.cjs"));
  archive = await build("a");
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test("the archive is reproducible: two builds from the same inputs have the same sha256", async () => {
  assert.equal(sha(await build("b")), sha(archive));
});

test("the archive is an OCI image layout whose digests, sizes and diff_ids all check out", async () => {
  const entries = await readTar(archive);
  const names = entries.map((e) => e.name);
  assert.deepEqual(names, [...names].sort(), "entries are sorted");
  for (const e of entries) {
    assert.equal(e.mtime, EPOCH, e.name);
    assert.deepEqual([e.uid, e.gid], [0, 0], e.name);
  }
  const file = (n: string) => {
    const e = entries.find((x) => x.name === n);
    assert.ok(e, `${n} is in the archive`);
    return e.data;
  };
  assert.deepEqual(JSON.parse(file("oci-layout").toString()), { imageLayoutVersion: "1.0.0" });
  const blobs = entries.filter((e) => e.name.startsWith("blobs/sha256/") && e.type === "file");
  for (const b of blobs) assert.equal(sha(b.data), path.basename(b.name), `${b.name} holds what its name says`);
  const blob = (d: { digest: string; size: number }) => {
    const data = file(`blobs/sha256/${d.digest.replace(/^sha256:/, "")}`);
    assert.equal(data.length, d.size, d.digest);
    return data;
  };

  const index = JSON.parse(file("index.json").toString());
  assert.equal(index.manifests.length, 1);
  const desc = index.manifests[0];
  assert.equal(desc.mediaType, "application/vnd.oci.image.manifest.v1+json");
  assert.equal(desc.annotations["io.containerd.image.name"], `${IMAGE_REPO}:0.0.0-test`);
  assert.equal(desc.annotations["org.opencontainers.image.ref.name"], "0.0.0-test");
  assert.equal(desc.platform.os, "linux");
  const manifest = JSON.parse(blob(desc).toString());
  assert.equal(manifest.config.mediaType, "application/vnd.oci.image.config.v1+json");
  const config = JSON.parse(blob(manifest.config).toString());
  assert.equal(config.architecture, desc.platform.architecture);
  assert.deepEqual(config.config.Entrypoint, [NODE_PATH, INSTALLER_PATH]);
  assert.equal(manifest.layers.length, 2);
  assert.equal(blobs.length, 4, "two layers, the config and the manifest");
  const layers: TarEntry[][] = [];
  for (const [i, l] of manifest.layers.entries()) {
    assert.equal(l.mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
    const tar = gunzipSync(blob(l));
    assert.equal(`sha256:${sha(tar)}`, config.rootfs.diff_ids[i], `diff_id of layer ${i}`);
    layers.push(await readTar(tar));
  }
  assert.equal(config.history.length, 2);

  // docker load's manifest.json names the same blobs.
  const docker = JSON.parse(file("manifest.json").toString());
  assert.deepEqual(docker, [
    {
      Config: `blobs/sha256/${manifest.config.digest.slice(7)}`,
      RepoTags: [`${IMAGE_REPO}:0.0.0-test`],
      Layers: manifest.layers.map((l: { digest: string }) => `blobs/sha256/${l.digest.slice(7)}`),
    },
  ]);

  const [runtime, app] = layers as [TarEntry[], TarEntry[]];
  for (const l of [runtime, app]) {
    const n = l.map((e) => e.name);
    assert.deepEqual(n, [...n].sort(), "layer entries are sorted");
    for (const e of l)
      if (e.type === "file")
        assert.ok(
          l.some((d) => d.name === `${path.posix.dirname(e.name)}/`) || !e.name.includes("/"),
          `${e.name} has its parent directory`,
        );
  }
  const node = runtime.find((e) => e.name === NODE_PATH.slice(1));
  assert.ok(node && node.mode === 0o755);
  assert.equal(sha(node.data), sha(await readFile(NODE_PATH)), "the host's node, unchanged");
  assert.ok(runtime.some((e) => e.name === "usr/bin/nsenter"));
  assert.ok(
    runtime.some((e) => /^lib.*\/libc\.so\.6$/.test(e.name)),
    "the C library travels with them",
  );
  assert.equal(runtime.find((e) => e.name === "tmp/")?.mode, 0o1777);
  for (const name of artifactNames()) {
    const e = app.find((x) => x.name === `${ARTIFACTS_DIR.slice(1)}/${name}`);
    assert.ok(e, `${name} is in the image`);
    if (name === "node") {
      assert.deepEqual([e.type, e.linkname], ["symlink", NODE_PATH], "the runtime layer's node, not a second copy");
    } else assert.equal(e.data.toString(), `artifact ${name}\n`);
  }
  assert.equal(app.find((e) => e.name === "opt/kuasar-vmm/bin/vmm-sandboxer")?.mode, 0o755);
  assert.ok(app.some((e) => e.name === INSTALLER_PATH.slice(1)));
});

const execFileP = promisify(execFile);

test("the image runs: its node starts the installer, whose nsenter runs the host root's containerd", async () => {
  // Unpack both layers, as a runtime would, and put a fake host root with an old containerd at /host.
  const root = path.join(tmp, "rootfs");
  const manifestOf = async () => {
    const entries = await readTar(archive);
    const get = (d: string) => entries.find((e) => e.name === `blobs/sha256/${d.slice(7)}`)!.data;
    const index = JSON.parse(entries.find((e) => e.name === "index.json")!.data.toString());
    const manifest = JSON.parse(get(index.manifests[0].digest).toString());
    return manifest.layers.map((l: { digest: string }) => gunzipSync(get(l.digest)));
  };
  for (const layer of await manifestOf()) {
    for (const e of await readTar(layer)) {
      const dest = path.join(root, e.name);
      if (e.type === "directory") await mkdir(dest, { recursive: true, mode: e.mode });
      else await writeFile(dest, e.data, { mode: e.mode });
    }
  }
  await mkdir(path.join(root, "host/bin"), { recursive: true });
  await mkdir(path.join(root, "host/usr/bin"), { recursive: true });
  await copyFile("/bin/busybox", path.join(root, "host/bin/sh")).catch(() => {
    throw new Error("/bin/busybox is missing; install it with: apt-get install -y busybox-static");
  });
  await writeFile(
    path.join(root, "host/usr/bin/containerd"),
    "#!/bin/sh\necho 'containerd github.com/containerd/containerd v1.7.27 05044ec0'\n",
    { mode: 0o755 },
  );
  const env = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
  const inImage = (...args: string[]) =>
    execFileP("chroot", [root, NODE_PATH, INSTALLER_PATH, ...args], { env }).then(
      (r) => ({ code: 0, out: r.stdout + r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
    );

  const help = await inImage("--help");
  assert.equal(help.code, 0, help.out);
  assert.match(help.out, /usage: kuasar-vmm-node-installer/);
  const ready = await inImage("ready");
  assert.equal(ready.code, 1);
  const refused = await inImage("install");
  assert.equal(refused.code, 1, refused.out);
  assert.match(refused.out, /containerd on this node is 1\.7\.27; kuasar-vmm needs containerd 2\.1 or newer/);
});
