import assert from "node:assert/strict";
import { test } from "node:test";
import { readSnapshotBlob } from "../../../pipeline/rootfs/snapshot-blob.ts";

/** A blob laid out as node writes one: magic, type, three length-prefixed strings, flags, the V8 data, the rest. */
function blob(v8: Buffer, magic = 0x0143da19): Buffer {
  const text = (s: string) => {
    const n = Buffer.alloc(8);
    n.writeBigUInt64LE(BigInt(s.length));
    return Buffer.concat([n, Buffer.from(s, "latin1")]);
  };
  const head = Buffer.alloc(5);
  head.writeUInt32LE(magic);
  head[4] = 1;
  const tail = Buffer.alloc(8);
  tail.writeUInt32LE(1);
  tail.writeInt32LE(v8.length, 4);
  return Buffer.concat([
    head,
    text("24.22.3"),
    text("x64"),
    text("linux"),
    tail,
    v8,
    Buffer.from("node's own sections"),
  ]);
}

test("readSnapshotBlob finds the V8 startup data and the metadata", () => {
  const v8 = Buffer.from("V8 startup data bytes");
  const r = readSnapshotBlob(blob(v8), "vmm-task.blob");
  assert.deepEqual(
    { nodeVersion: r.nodeVersion, arch: r.arch, platform: r.platform, data: r.v8StartupData.toString() },
    { nodeVersion: "24.22.3", arch: "x64", platform: "linux", data: v8.toString() },
  );
});

test("readSnapshotBlob names the file and what is wrong with it", () => {
  assert.throws(() => readSnapshotBlob(blob(Buffer.from("x"), 0x12345678), "a.blob"), /a\.blob: magic 0x12345678/);
  const whole = blob(Buffer.alloc(100, 7));
  assert.throws(() => readSnapshotBlob(whole.subarray(0, 60), "b.blob"), /b\.blob: ends at byte 60 inside the V8/);
  assert.throws(
    () => readSnapshotBlob(whole.subarray(0, 10), "c.blob"),
    /c\.blob: ends at byte 10 inside the length of the node version/,
  );
});
