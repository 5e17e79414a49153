/**
 * Reading node's --snapshot-blob file (node_snapshotable.cc, SnapshotData::ToBlob): a u32 magic, the metadata (a
 * type byte, then node's version, arch and platform, each a u64 length and its bytes, then u32 flags), then V8's
 * startup data as an i32 length and its bytes, then node's own sections. All little-endian on the hosts node builds
 * blobs for here.
 */
const MAGIC = 0x0143da19;

/** The metadata and V8 startup data of a snapshot blob; `file` names it in errors. */
export interface SnapshotBlob {
  nodeVersion: string;
  arch: string;
  platform: string;
  v8StartupData: Buffer;
}

export function readSnapshotBlob(blob: Buffer, file: string): SnapshotBlob {
  let at = 0;
  const need = (n: number, what: string) => {
    if (at + n > blob.length) {
      throw new Error(`${file}: ends at byte ${blob.length} inside the ${what}: not a complete node snapshot blob`);
    }
  };
  need(4, "magic number");
  const magic = blob.readUInt32LE(0);
  if (magic !== MAGIC) {
    throw new Error(
      `${file}: magic 0x${magic.toString(16)}, not node's snapshot blob magic 0x${MAGIC.toString(16)}: ` +
        "not a blob from `node --build-snapshot`, or node changed its format (see pipeline/rootfs/snapshot-blob.ts)",
    );
  }
  at = 5; // the magic and the type byte
  const text = (what: string) => {
    need(8, `length of the ${what}`);
    const n = Number(blob.readBigUInt64LE(at));
    at += 8;
    need(n, what);
    const s = blob.toString("latin1", at, at + n);
    at += n;
    return s;
  };
  const nodeVersion = text("node version");
  const arch = text("architecture");
  const platform = text("platform");
  need(4 + 4, "flags and the V8 startup data's length");
  const size = blob.readInt32LE(at + 4);
  at += 8;
  if (size <= 0)
    throw new Error(`${file}: V8 startup data of ${size} bytes at byte ${at - 4}: not a node snapshot blob`);
  need(size, "V8 startup data");
  return { nodeVersion, arch, platform, v8StartupData: blob.subarray(at, at + size) };
}
