import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { extract } from "tar-stream";
import { archiveOrder, writeTarZst } from "../../../pipeline/dist/archive.ts";
import type { LayerEntry } from "../../../pipeline/installer-image/oci.ts";
import { hashFile } from "../../../pipeline/lib/hash.ts";

const EPOCH = 1700000000;
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "dist-archive-"));
});
after(() => rm(dir, { recursive: true, force: true }));

interface Header {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: number;
}

async function headers(tarZst: string): Promise<Header[]> {
  const tar = execFileSync("zstd", ["-d", "-c", tarZst]);
  const out: Header[] = [];
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("entry", (h, stream, next) => {
      out.push({
        name: h.name,
        type: h.type ?? "",
        mode: h.mode ?? -1,
        uid: h.uid ?? -1,
        gid: h.gid ?? -1,
        uname: h.uname ?? "",
        gname: h.gname ?? "",
        mtime: (h.mtime?.getTime() ?? 0) / 1000,
      });
      stream.on("end", next);
      stream.resume();
    });
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  ex.end(tar);
  await done;
  return out;
}

/** Two source trees with the same bytes but other mtimes and modes, as a copy of bin/ would have. */
async function sources(name: string, mtime: Date, mode: number): Promise<LayerEntry[]> {
  const src = path.join(dir, name);
  await mkdir(src);
  const files: Record<string, string> = {
    "kuasar.img": "image bytes\n",
    node: "node bytes\n",
    "vmm-sandboxer": "#!/usr/bin/env node\n",
    "install.sh": "#!/bin/sh\n",
  };
  for (const [f, text] of Object.entries(files)) {
    await writeFile(path.join(src, f), text);
    await chmod(path.join(src, f), mode);
    await utimes(path.join(src, f), mtime, mtime);
  }
  return [
    { path: "install.sh", type: "file", mode: 0o755, source: path.join(src, "install.sh") },
    { path: "bin/vmm-sandboxer", type: "file", mode: 0o755, source: path.join(src, "vmm-sandboxer") },
    { path: "bin/kuasar.img", type: "file", mode: 0o644, source: path.join(src, "kuasar.img") },
    { path: "bin/node", type: "file", mode: 0o755, source: path.join(src, "node") },
    { path: "SHA256SUMS", type: "file", mode: 0o644, data: Buffer.from("sums\n") },
  ];
}

test("the .tar.zst is bit-identical whatever the sources' mtimes and modes; entries are root's, at the epoch", async () => {
  const a = path.join(dir, "a.tar.zst");
  const b = path.join(dir, "b.tar.zst");
  await writeTarZst(await sources("src-a", new Date(), 0o600), a, EPOCH);
  await writeTarZst(await sources("src-b", new Date(Date.now() + 86_400_000), 0o777), b, EPOCH);
  assert.equal(await hashFile(a), await hashFile(b));

  const hs = await headers(a);
  assert.deepEqual(
    hs.map((h) => `${h.name} ${h.type} ${h.mode.toString(8)}`),
    [
      "SHA256SUMS file 644",
      "bin/ directory 755",
      "bin/node file 755",
      "bin/kuasar.img file 644",
      "bin/vmm-sandboxer file 755",
      "install.sh file 755",
    ],
  );
  for (const h of hs) {
    assert.deepEqual([h.uid, h.gid, h.uname, h.gname, h.mtime], [0, 0, "root", "root", EPOCH], h.name);
  }
  // What a user runs: GNU tar hands .zst to zstd -d, which reads the 128 MiB window without extra flags.
  const x = path.join(dir, "x");
  await mkdir(x);
  execFileSync("tar", ["-xf", a, "-C", x]);
  assert.equal(await readFile(path.join(x, "bin/node"), "utf8"), "node bytes\n");
});

test("entries sort by path, except that bin/node goes right before bin/kuasar.img (one compression window)", () => {
  const f = (p: string): LayerEntry => ({ path: p, type: "file", mode: 0o644, data: Buffer.alloc(0) });
  const order = archiveOrder([f("bin/vsock.node"), f("bin/node"), f("bin/kuasar.img"), f("bin/config.toml"), f("a")]);
  assert.deepEqual(
    order.map((e) => e.path),
    ["a", "bin", "bin/config.toml", "bin/node", "bin/kuasar.img", "bin/vsock.node"],
  );
  // Without the image there is nothing to sit next to: plain path order.
  assert.deepEqual(
    archiveOrder([f("bin/z"), f("bin/node")]).map((e) => e.path),
    ["bin", "bin/node", "bin/z"],
  );
  assert.throws(() => archiveOrder([f("a"), f("a")]), /given twice/);
});
