import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  applyPatches,
  download,
  materialise,
  resolveSource,
  SourceError,
  sourceDigest,
} from "../../../pipeline/kernel/source.ts";
import { hashFile, hashTree, sha256 } from "../../../pipeline/lib/hash.ts";
import { $quiet, toolShell } from "../../../pipeline/lib/shell.ts";

const digests = { fileDigest: hashFile, treeDigest: (d: string) => hashTree(d) };
const quiet = () => {};
const tools = toolShell("test", quiet);

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "kernel-source-"));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A tarball holding linux-x/{Makefile,Kconfig,hello.c}: enough to pass for a kernel tree. */
async function fakeKernelTarball(name = "linux-x.tar.gz"): Promise<string> {
  const root = path.join(tmp, `tree-${name}`);
  await mkdir(path.join(root, "linux-x"), { recursive: true });
  await writeFile(path.join(root, "linux-x/Makefile"), "all:\n");
  await writeFile(path.join(root, "linux-x/Kconfig"), "config A\n\tbool\n");
  await writeFile(path.join(root, "linux-x/hello.c"), "int main(void) { return 0; }\n");
  const tarball = path.join(tmp, name);
  await $quiet`tar -czf ${tarball} -C ${root} linux-x`;
  return tarball;
}

describe("resolveSource", () => {
  test("a URL without a sha256 is refused, naming the URL", async () => {
    await assert.rejects(
      resolveSource("https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.tar.xz", undefined, tmp),
      (err: Error) =>
        err instanceof SourceError && /linux-6\.1\.tar\.xz is a URL: give its sha256 too/.test(err.message),
    );
  });

  test("a malformed sha256 is refused", async () => {
    await assert.rejects(
      resolveSource("https://x/k.tar.xz", "ABC", tmp),
      /sha256 'ABC' is not 64 lowercase hex digits/,
    );
  });

  test("a local path is a tarball or a directory, relative to the repo; a missing one is named", async () => {
    const tarball = await fakeKernelTarball();
    assert.deepEqual(await resolveSource(path.basename(tarball), undefined, tmp), { kind: "tarball", path: tarball });
    assert.deepEqual(await resolveSource(tmp, undefined, "/"), { kind: "dir", path: tmp });
    await assert.rejects(resolveSource("nope.tar.xz", undefined, tmp), /kernel source .*nope\.tar\.xz does not exist/);
    await assert.rejects(resolveSource(tmp, "a".repeat(64), "/"), /is a directory; a sha256 applies only/);
  });
});

describe("sourceDigest", () => {
  test("a tarball with the wrong sha256 fails naming the file, the expected and the actual digest", async () => {
    const tarball = await fakeKernelTarball();
    const actual = await hashFile(tarball);
    const wrong = "0".repeat(64);
    const src = await resolveSource(tarball, wrong, tmp);
    await assert.rejects(sourceDigest(src, digests), (err: Error) => {
      assert.match(err.message, new RegExp(`kernel source ${tarball} has sha256 ${actual}, expected ${wrong}`));
      return true;
    });
    assert.equal(await sourceDigest(await resolveSource(tarball, actual, tmp), digests), actual);
  });

  test("a URL's digest is its sha256 (no download needed to compute the key)", async () => {
    const sha = "b".repeat(64);
    assert.equal(await sourceDigest({ kind: "url", url: "https://x/k.tar.xz", sha256: sha }, digests), sha);
  });
});

describe("download", () => {
  const body = Buffer.from("not really a kernel, but bytes with a digest\n");
  let server: http.Server;
  let base: string;
  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url === "/k.tar.gz") res.end(body);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test("a wrong sha256 fails naming the URL and both digests, and leaves no file behind", async () => {
    const dest = path.join(tmp, "dl-wrong.tar.gz");
    const wrong = "1".repeat(64);
    await assert.rejects(
      download(`${base}/k.tar.gz`, wrong, dest),
      new RegExp(`kernel source ${base}/k\\.tar\\.gz has sha256 ${sha256(body)}, expected ${wrong}`),
    );
    assert.equal(existsSync(dest), false);
    assert.equal(existsSync(`${dest}.part`), false);
  });

  test("the right sha256 keeps the file", async () => {
    const dest = path.join(tmp, "dl-ok.tar.gz");
    await download(`${base}/k.tar.gz`, sha256(body), dest);
    assert.deepEqual(await readFile(dest), body);
  });

  test("an HTTP error is reported with the status", async () => {
    await assert.rejects(download(`${base}/missing`, sha256(body), path.join(tmp, "x")), /\/missing failed: HTTP 404/);
  });
});

describe("materialise and patches", () => {
  test("a tarball is extracted and its single top directory is the tree", async () => {
    const src = await resolveSource(await fakeKernelTarball(), undefined, tmp);
    const root = await materialise(src, path.join(tmp, "scratch-a"), tools, quiet);
    assert.equal(root, path.join(tmp, "scratch-a/src/linux-x"));
  });

  test("an archive that holds no kernel tree is named", async () => {
    const dir = path.join(tmp, "not-kernel");
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "README"), "hi\n");
    const tarball = path.join(tmp, "not-kernel.tar");
    await $quiet`tar -cf ${tarball} -C ${dir} README`;
    await assert.rejects(
      materialise({ kind: "tarball", path: tarball }, path.join(tmp, "scratch-b"), tools, quiet),
      /not-kernel\.tar does not look like a Linux tree/,
    );
  });

  test("patches apply in order; the failing one is named with its position", async () => {
    const src = await resolveSource(await fakeKernelTarball("linux-p.tar.gz"), undefined, tmp);
    const root = await materialise(src, path.join(tmp, "scratch-c"), tools, quiet);
    const first = path.join(tmp, "0001-return-1.patch");
    await writeFile(
      first,
      "--- a/hello.c\n+++ b/hello.c\n@@ -1 +1 @@\n-int main(void) { return 0; }\n+int main(void) { return 1; }\n",
    );
    const second = path.join(tmp, "0002-stale.patch");
    await writeFile(
      second,
      "--- a/hello.c\n+++ b/hello.c\n@@ -1 +1 @@\n-int main(void) { return 0; }\n+int main(void) { return 2; }\n",
    );
    await assert.rejects(applyPatches(root, [first, second], tools, quiet), (err: Error) => {
      assert.match(err.message, /kernel patch .*0002-stale\.patch \(2 of 2\) does not apply/);
      return true;
    });
    assert.equal(await readFile(path.join(root, "hello.c"), "utf8"), "int main(void) { return 1; }\n");
  });
});
