import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  FakeLauncher,
  fakeDaemon,
  mountTmpfs,
  recordsOnDisk,
  rng,
  statusVersusDisk,
} from "../../testkit/fake-daemon.ts";

// State changes while --dir is full (the real-daemon Create case is in faults.test.ts): a Start whose record cannot
// be written must not leave a VM running that no sandbox.json knows of, and a failed Stop leaves Status and
// sandbox.json agreeing.
test("a full disk during Start and Stop: no unrecorded VM, Status agrees with sandbox.json", async () => {
  const top = await mkdtemp(path.join(os.tmpdir(), "rel-fullstate-"));
  const fs = path.join(top, "fs");
  await mkdir(fs);
  const umount = mountTmpfs(fs, 512);
  const launcher = new FakeLauncher(rng(1), 0);
  const d = await fakeDaemon(fs, launcher);
  try {
    for (const id of ["a", "b"]) await d.client.create({ sandboxId: id });
    const filler = await open(path.join(fs, "filler"), "w");
    try {
      for (;;) await filler.write(Buffer.alloc(16 * 1024));
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, "ENOSPC");
    }
    await filler.close();
    const before = await recordsOnDisk(path.join(fs, "state"));

    const enospc = (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.INTERNAL, e.details);
      assert.match(e.details, /sandbox\.json.*(ENOSPC|no space left)/i);
      return true;
    };
    await assert.rejects(d.client.start({ sandboxId: "a" }), enospc);
    assert.equal(launcher.vms.size, 0, "the VM whose record could not be written was stopped");
    assert.equal(launcher.started, launcher.released);
    await assert.rejects(d.client.stop({ sandboxId: "b" }), enospc);
    assert.deepEqual(await recordsOnDisk(path.join(fs, "state")), before);
    assert.deepEqual(await statusVersusDisk(d.client, path.join(fs, "state"), ["a", "b"]), []);

    await rm(path.join(fs, "filler"));
    await d.client.start({ sandboxId: "a" });
    await d.client.stop({ sandboxId: "b" });
    assert.deepEqual(await statusVersusDisk(d.client, path.join(fs, "state"), ["a", "b"]), []);
    for (const id of ["a", "b"]) await d.client.shutdown({ sandboxId: id });
    assert.equal(launcher.vms.size, 0);
  } finally {
    d.close();
    umount();
    await rm(top, { recursive: true, force: true });
  }
});
