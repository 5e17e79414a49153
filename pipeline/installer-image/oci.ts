import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { type Pack, pack as tarPack } from "tar-stream";

// An OCI image layout (oci-layout, index.json, blobs/sha256/...) in one tar, which `ctr images import`, skopeo's
// oci-archive: and `docker load` read. Reproducible: fixed mtimes and owners, sorted entries, gzip without a name
// or time, JSON written in a fixed key order.

export type LayerEntry =
  | { path: string; type: "dir"; mode: number }
  | { path: string; type: "file"; mode: number; source: string }
  | { path: string; type: "file"; mode: number; data: Buffer }
  | { path: string; type: "symlink"; target: string };

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  Labels?: Record<string, string>;
}

export interface OciImage {
  /** Full reference for containerd, e.g. localhost/kuasar-vmm-node-installer:0.1.0 (its tag is the OCI ref.name). */
  name: string;
  /** One entry list per layer, bottom first, with the history line each layer gets. */
  layers: { entries: LayerEntry[]; createdBy: string }[];
  config: ImageConfig;
  /** Seconds since the epoch: every mtime, and the image's created time. */
  epoch: number;
  /** OCI architecture (amd64, arm64). */
  architecture: string;
}

export interface Blob {
  digest: string;
  size: number;
  mediaType: string;
}

const MT = {
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
  config: "application/vnd.oci.image.config.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
};

/** Go's architecture names for Node's. */
export function ociArch(arch: string = process.arch): string {
  const names: Record<string, string> = { x64: "amd64", arm64: "arm64" };
  const n = names[arch];
  if (!n) throw new Error(`no OCI architecture known for '${arch}' (supported: x64, arm64)`);
  return n;
}

/** Adds the parent directories an entry list leaves out (0755), refuses duplicates, and sorts by path. */
export function normalizeEntries(entries: LayerEntry[]): LayerEntry[] {
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) {
    const p = e.path.replace(/^\/+|\/+$/g, "");
    if (!p || p.split("/").some((c) => c === "." || c === "..")) throw new Error(`bad layer path '${e.path}'`);
    if (byPath.has(p)) throw new Error(`layer path '${p}' is given twice`);
    byPath.set(p, { ...e, path: p });
  }
  for (const p of [...byPath.keys()]) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const have = byPath.get(dir);
      if (have && have.type !== "dir") throw new Error(`layer path '${dir}' is a ${have.type} and a parent of '${p}'`);
      if (!have) byPath.set(dir, { path: dir, type: "dir", mode: 0o755 });
    }
  }
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function digestTap(h: Hash, counter: { n: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      counter.n += chunk.length;
      cb(null, chunk);
    },
  });
}

function addEntry(pack: Pack, header: Parameters<Pack["entry"]>[0], data?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (data) pack.entry(header, data, cb);
    else pack.entry(header, cb);
  });
}

async function addFile(pack: Pack, header: Parameters<Pack["entry"]>[0], source: string): Promise<void> {
  const size = (await stat(source)).size;
  const done = new Promise<void>((resolve, reject) => {
    const sink = pack.entry({ ...header, size }, (err) => (err ? reject(err) : resolve()));
    pipeline(createReadStream(source), sink).catch(reject);
  });
  await done;
}

/** Writes entries as a tar into a tar stream (fixed owner and mtime; owner names empty unless given). */
export async function packEntries(
  pack: Pack,
  entries: LayerEntry[],
  mtime: Date,
  names: { uname: string; gname: string } = { uname: "", gname: "" },
): Promise<void> {
  const base = { uid: 0, gid: 0, ...names, mtime };
  for (const e of entries) {
    if (e.type === "dir") await addEntry(pack, { ...base, name: `${e.path}/`, type: "directory", mode: e.mode });
    else if (e.type === "symlink") {
      await addEntry(pack, { ...base, name: e.path, type: "symlink", linkname: e.target, mode: 0o777 });
    } else if ("data" in e) {
      await addEntry(pack, { ...base, name: e.path, type: "file", mode: e.mode, size: e.data.length }, e.data);
    } else await addFile(pack, { ...base, name: e.path, type: "file", mode: e.mode }, e.source);
  }
  pack.finalize();
}

/** A gzip'd layer tar written to file; returns its blob and its diff_id (digest of the uncompressed tar). */
export async function writeLayer(
  entries: LayerEntry[],
  file: string,
  epoch: number,
): Promise<{ blob: Blob; diffId: string }> {
  const pack = tarPack();
  const raw = createHash("sha256");
  const gz = createHash("sha256");
  const rawCount = { n: 0 };
  const gzCount = { n: 0 };
  const writing = pipeline(
    pack,
    digestTap(raw, rawCount),
    createGzip({ level: 6 }),
    digestTap(gz, gzCount),
    createWriteStream(file),
  );
  await Promise.all([packEntries(pack, normalizeEntries(entries), new Date(epoch * 1000)), writing]);
  return {
    blob: { digest: `sha256:${gz.digest("hex")}`, size: gzCount.n, mediaType: MT.layer },
    diffId: `sha256:${raw.digest("hex")}`,
  };
}

function jsonBlob(value: unknown, mediaType: string): { data: Buffer; blob: Blob } {
  const data = Buffer.from(JSON.stringify(value));
  return {
    data,
    blob: { digest: `sha256:${createHash("sha256").update(data).digest("hex")}`, size: data.length, mediaType },
  };
}

/**
 * Writes the image as an OCI layout tar at out, using scratch for the layer blobs. Returns the manifest's blob
 * (its digest is the image's digest).
 */
export async function writeOciArchive(image: OciImage, out: string, scratch: string): Promise<Blob> {
  const blobs: { file?: string; data?: Buffer; blob: Blob }[] = [];
  const diffIds: string[] = [];
  for (const [i, layer] of image.layers.entries()) {
    const file = path.join(scratch, `layer-${i}.tar.gz`);
    const { blob, diffId } = await writeLayer(layer.entries, file, image.epoch);
    blobs.push({ file, blob });
    diffIds.push(diffId);
  }
  const created = new Date(image.epoch * 1000).toISOString();
  const config = jsonBlob(
    {
      created,
      architecture: image.architecture,
      os: "linux",
      config: image.config,
      rootfs: { type: "layers", diff_ids: diffIds },
      history: image.layers.map((l) => ({ created, created_by: l.createdBy })),
    },
    MT.config,
  );
  const layerBlobs = blobs.map((b) => b.blob);
  const manifest = jsonBlob(
    { schemaVersion: 2, mediaType: MT.manifest, config: config.blob, layers: layerBlobs },
    MT.manifest,
  );
  blobs.push(config, manifest);
  const tag = image.name.slice(image.name.lastIndexOf(":") + 1);
  if (!tag || tag.includes("/")) throw new Error(`image name '${image.name}' has no tag`);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.index,
      manifests: [
        {
          ...manifest.blob,
          platform: { architecture: image.architecture, os: "linux" },
          annotations: { "io.containerd.image.name": image.name, "org.opencontainers.image.ref.name": tag },
        },
      ],
    }),
  );
  const blobPath = (b: Blob) => `blobs/sha256/${b.digest.slice("sha256:".length)}`;
  // docker load reads this file (docker save writes both since Docker 25).
  const dockerManifest = Buffer.from(
    JSON.stringify([{ Config: blobPath(config.blob), RepoTags: [image.name], Layers: layerBlobs.map(blobPath) }]),
  );
  const layout = Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" }));

  const entries: LayerEntry[] = [
    { path: "oci-layout", type: "file", mode: 0o644, data: layout },
    { path: "index.json", type: "file", mode: 0o644, data: index },
    { path: "manifest.json", type: "file", mode: 0o644, data: dockerManifest },
  ];
  const seen = new Set<string>();
  for (const b of blobs) {
    if (seen.has(b.blob.digest)) continue;
    seen.add(b.blob.digest);
    entries.push(
      b.file
        ? { path: blobPath(b.blob), type: "file", mode: 0o644, source: b.file }
        : { path: blobPath(b.blob), type: "file", mode: 0o644, data: b.data! },
    );
  }
  const pack = tarPack();
  await Promise.all([
    packEntries(pack, normalizeEntries(entries), new Date(image.epoch * 1000)),
    pipeline(pack, createWriteStream(out)),
  ]);
  return manifest.blob;
}
