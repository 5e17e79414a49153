import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { before, test } from "node:test";
import { promisify } from "node:util";
import * as h from "./harness.ts";

before(() => h.addonsReady());

// Freed chunks in the middle of malloc's heap stay resident until malloc_trim(0) hands their pages back: the
// child frees every other 48 KiB ArrayBuffer (below the mmap threshold, so they live in the heap) and trims.
const CHILD = `
const { trimHeap } = require(process.env.KUASAR_NS_ADDON);
const anon = () => Number(/RssAnon:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/status", "utf8"))[1]);
let bufs = Array.from({ length: 2000 }, () => new Uint8Array(48 * 1024).fill(1));
bufs = bufs.filter((_, i) => i % 2);
globalThis.gc(); globalThis.gc();
setTimeout(() => {
  const before = anon();
  const released = trimHeap();
  process.stdout.write(JSON.stringify({ before, after: anon(), released, kept: bufs.length }));
}, 200);
`;

test("trimHeap gives freed heap chunks back to the kernel", async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ["--expose-gc", "-e", CHILD], { env: process.env });
  const r = JSON.parse(stdout) as { before: number; after: number; released: boolean; kept: number };
  assert.equal(r.released, true);
  // 1000 freed buffers are 47 MiB; at least 20 MiB of it must leave RssAnon.
  assert.ok(r.before - r.after > 20 * 1024, `RssAnon ${r.before} -> ${r.after} kB`);
});
