import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type Header, type Pack, pack as tarPack } from "tar-stream";

// An offline OCI image archive (what `ctr images import` reads): one uncompressed layer holding a static busybox and
// its applet links, so the e2e tests need neither a registry nor network.

const APPLETS = ["sh", "echo", "cat", "sleep", "ls", "hostname", "uname", "true", "false", "env", "id", "ps", "kill"];
const EPOCH = new Date(0);
const ARCH = process.arch === "arm64" ? "arm64" : "amd64";

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function packTar(add: (pack: Pack) => void): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on("data", (c) => chunks.push(c as Buffer));
    pack.on("end", () => resolve(Buffer.concat(chunks)));
    pack.on("error", reject);
  });
  add(pack);
  pack.finalize();
  return done;
}

function entry(pack: Pack, header: Partial<Header> & { name: string }, body?: Buffer): void {
  const h = { uid: 0, gid: 0, mtime: EPOCH, ...header };
  if (body) pack.entry(h, body);
  else pack.entry(h);
}

/** Builds the archive for `name` (a full reference, e.g. docker.io/library/kuasar-busybox:e2e) from a static busybox. */
export async function busyboxImageArchive(name: string, busybox = "/bin/busybox"): Promise<Buffer> {
  const binary = await readFile(busybox);
  const layerTar = await packTar((p) => {
    for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev"]) {
      entry(p, { name: `${d}/`, type: "directory", mode: d === "tmp" ? 0o1777 : 0o755 });
    }
    entry(p, { name: "bin/busybox", type: "file", mode: 0o755, size: binary.length }, binary);
    for (const a of APPLETS) entry(p, { name: `bin/${a}`, type: "symlink", linkname: "busybox", mode: 0o777 });
    const passwd = Buffer.from("root:x:0:0:root:/:/bin/sh\n");
    entry(p, { name: "etc/passwd", type: "file", mode: 0o644, size: passwd.length }, passwd);
  });

  const config = Buffer.from(
    JSON.stringify({
      architecture: ARCH,
      os: "linux",
      config: { Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["sh"], WorkingDir: "/" },
      rootfs: { type: "layers", diff_ids: [sha256(layerTar)] },
      history: [{ created: EPOCH.toISOString(), created_by: "kuasar-vmm e2e image builder" }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(layerTar), size: layerTar.length },
      ],
    }),
  );
  const tag = name.slice(name.lastIndexOf(":") + 1);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: sha256(manifest),
          size: manifest.length,
          platform: { architecture: ARCH, os: "linux" },
          annotations: { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag },
        },
      ],
    }),
  );
  const layout = Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" }));

  return packTar((p) => {
    entry(p, { name: "blobs/", type: "directory", mode: 0o755 });
    entry(p, { name: "blobs/sha256/", type: "directory", mode: 0o755 });
    for (const blob of [layerTar, config, manifest]) {
      const file = `blobs/sha256/${sha256(blob).slice("sha256:".length)}`;
      entry(p, { name: file, type: "file", mode: 0o644, size: blob.length }, blob);
    }
    entry(p, { name: "oci-layout", type: "file", mode: 0o644, size: layout.length }, layout);
    entry(p, { name: "index.json", type: "file", mode: 0o644, size: index.length }, index);
  });
}
