import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { STARTUP_DATA_OFFSET, startupDataFile } from "../../../runtime/contract/startup-data.ts";
import { heapAddon } from "../../../runtime/native/ns/heap.ts";
import * as h from "./harness.ts";

let dir: string;
before(async () => {
  await h.addonsReady();
  dir = await mkdtemp(path.join(os.tmpdir(), "startup-data-"));
});
after(() => rm(dir, { recursive: true, force: true }));

// A child holds a private copy of 1 MiB of random bytes in an allocation malloc makes with mmap (the threshold is
// fixed so that it does), as node holds its V8 startup data, writes them as a startup data file, and maps the file
// over its copy. FLIP changes one byte of the file in the copy's last whole page, so that nothing matches.
const CHILD = `
const fs = require("fs");
const { mapFileOverCopy } = require(process.env.KUASAR_NS_ADDON);
const { file, offset, flip } = JSON.parse(process.argv[1]);
const anon = () => Number(/RssAnon:\\s+(\\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"))[1]);
async function main() {
  // Allocated one after the other, the three mappings are placed side by side (each below the last) and the kernel
  // merges them: the copy sits inside a larger mapping, as node's can.
  const earlier = Buffer.allocUnsafeSlow(1048576).fill(1);
  const copy = Buffer.allocUnsafeSlow(1048576 + 100);
  const later = Buffer.allocUnsafeSlow(1048576).fill(2);
  require("crypto").randomFillSync(copy);
  const bytes = Buffer.concat([Buffer.alloc(offset), copy]);
  if (flip) bytes[bytes.length - 200] ^= 1;
  fs.writeFileSync(file, bytes, { flush: true });
  const before = anon();
  const replaced = await mapFileOverCopy(file, offset);
  const after = anon();
  const maps = fs.readFileSync("/proc/self/maps", "utf8").split("\\n");
  const mapped = maps.filter((l) => l.endsWith(file)).length;
  // The anonymous mapping left right below the file's pages: the copy's first page alone, or with "later" merged.
  const fileAt = maps.findIndex((l) => l.endsWith(file));
  const range = (l) => l.split(" ")[0].split("-").map((x) => parseInt(x, 16));
  const belowPages = fileAt > 0 && range(maps[fileAt - 1])[1] === range(maps[fileAt])[0] ? (range(maps[fileAt - 1])[1] - range(maps[fileAt - 1])[0]) / 4096 : 0;
  // What of the file the comparison left in the page cache (util-linux fincore).
  const cached = Number(require("child_process").execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", file], { encoding: "utf8" }));
  const unchanged = copy.equals(fs.readFileSync(file).subarray(offset)) !== flip;
  copy[5000] ^= 0xff;
  const written = copy[5000] !== fs.readFileSync(file)[offset + 5000];
  const again = await mapFileOverCopy(file, offset);
  // Scheduling policy of every thread (stat field 41): the idle policy the work ran at must not outlive it.
  const policies = fs.readdirSync("/proc/self/task").map((t) =>
    Number(fs.readFileSync("/proc/self/task/" + t + "/stat", "utf8").split(") ")[1].split(" ")[38]));
  return { replaced, before, after, mapped, belowPages, cached, unchanged, written, again, policies, kept: earlier.length + later.length };
}
main().then((r) => process.stdout.write(JSON.stringify(r)));
`;

async function child(flip: boolean) {
  const file = path.join(dir, `copy-${flip}`);
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["-e", CHILD, JSON.stringify({ file, offset: STARTUP_DATA_OFFSET, flip })],
    { env: { ...process.env, MALLOC_MMAP_THRESHOLD_: "131072" } },
  );
  return JSON.parse(stdout) as {
    replaced: number;
    before: number;
    after: number;
    mapped: number;
    belowPages: number;
    cached: number;
    unchanged: boolean;
    written: boolean;
    again: number;
    policies: number[];
  };
}

test("mapFileOverCopy puts the file's pages under a private copy of its bytes; contents and writes unchanged", async () => {
  // Whether the kernel merged the copy's mapping with its neighbours varies from run to run: run until one did, so
  // both the copy alone and the copy inside a larger mapping are covered.
  for (let run = 1; ; run++) {
    const r = await child(false);
    // The copy's whole pages: all but the first (malloc's header) and the last (partly past the copy).
    assert.equal(r.replaced, Math.floor((STARTUP_DATA_OFFSET + 1048576 + 100) / 4096) * 4096 - 4096);
    assert.ok(r.mapped >= 1, "the file is mapped");
    assert.ok(r.before - r.after > r.replaced / 2048, `RssAnon ${r.before} -> ${r.after} kB`);
    assert.equal(r.cached, 0, "the file's pages the comparison read are dropped from the page cache");
    assert.equal(r.unchanged, true, "the copy reads the same bytes");
    assert.equal(r.written, true, "a write changes the copy, not the file");
    assert.equal(r.again, 0, "the copy is the file's now, so a second call finds nothing");
    assert.deepEqual(new Set(r.policies), new Set([0]), "every thread is back at SCHED_OTHER");
    if (r.belowPages > 1) break;
    assert.ok(run < 8, "in 8 runs the kernel never merged the copy's mapping with the one made after it");
  }
});

test("mapFileOverCopy leaves memory alone when no copy matches the file byte for byte", async () => {
  const r = await child(true);
  assert.equal(r.replaced, 0);
  assert.equal(r.mapped, 0);
});

test("mapFileOverCopy names the file it cannot use", async () => {
  const missing = path.join(dir, "missing");
  await assert.rejects(heapAddon().mapFileOverCopy(missing, 16), (e: NodeJS.ErrnoException) => {
    return e.code === "ENOENT" && e.message.includes(missing);
  });
  const short = path.join(dir, "short");
  await writeFile(short, Buffer.alloc(16));
  await assert.rejects(heapAddon().mapFileOverCopy(short, 16), (e: NodeJS.ErrnoException) => {
    return e.code === "EINVAL" && e.message.includes(short);
  });
});

test("startupDataFile lays the data out at the offset of glibc's mmap'd allocations", () => {
  const f = startupDataFile(Buffer.from("abc"));
  assert.equal(f.length, STARTUP_DATA_OFFSET + 3);
  assert.equal(
    f.subarray(0, STARTUP_DATA_OFFSET).every((b) => b === 0),
    true,
  );
  assert.equal(f.subarray(STARTUP_DATA_OFFSET).toString(), "abc");
});
