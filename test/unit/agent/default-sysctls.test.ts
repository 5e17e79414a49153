import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { applyDefaultSysctls, DEFAULT_SYSCTLS } from "../../../runtime/agent/default-sysctls.ts";
import { logger } from "../../../runtime/log/log.ts";

const root = await mkdtemp(path.join(os.tmpdir(), "default-sysctls-"));
after(() => rm(root, { recursive: true, force: true }));

test("Kuasar's defaults: overcommit on, IPVS expiring connections to gone servers", () => {
  assert.deepEqual(DEFAULT_SYSCTLS, { "vm.overcommit_memory": "1", "net.ipv4.vs.expire_nodest_conn": "1" });
});

test("each default is written where the kernel has it; a missing key is skipped, never created", async () => {
  await mkdir(path.join(root, "proc/sys/vm"), { recursive: true });
  await writeFile(path.join(root, "proc/sys/vm/overcommit_memory"), "0\n");
  await mkdir(path.join(root, "proc/sys/net/ipv4"), { recursive: true });
  const warnings: string[] = [];
  const log = logger("test");
  log.warn = (m: string) => void warnings.push(m);
  assert.deepEqual(applyDefaultSysctls({ root, log }), ["vm.overcommit_memory"]);
  assert.equal(await readFile(path.join(root, "proc/sys/vm/overcommit_memory"), "utf8"), "1\n");
  await assert.rejects(readFile(path.join(root, "proc/sys/net/ipv4/vs/expire_nodest_conn")), { code: "ENOENT" });
  assert.deepEqual(warnings, [], "a key this kernel lacks is not worth a warning");
});

test("a default that cannot be written is logged and the rest still applied", async () => {
  const r = await mkdtemp(path.join(os.tmpdir(), "default-sysctls-"));
  try {
    // A directory where the file should be: EISDIR, not ENOENT.
    await mkdir(path.join(r, "proc/sys/vm/overcommit_memory"), { recursive: true });
    await mkdir(path.join(r, "proc/sys/net/ipv4/vs"), { recursive: true });
    await writeFile(path.join(r, "proc/sys/net/ipv4/vs/expire_nodest_conn"), "0\n");
    const warnings: string[] = [];
    const log = logger("test");
    log.warn = (m: string) => void warnings.push(m);
    assert.deepEqual(applyDefaultSysctls({ root: r, log }), ["net.ipv4.vs.expire_nodest_conn"]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /default sysctl vm.overcommit_memory=1 not applied \(.*overcommit_memory\): EISDIR/);
  } finally {
    await rm(r, { recursive: true, force: true });
  }
});
