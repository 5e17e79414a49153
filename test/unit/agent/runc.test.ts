import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, test } from "node:test";
import { Runc, RuncError } from "../../../runtime/agent/runc.ts";
import * as h from "./harness.ts";

// runc create orphans the container process; init reaps it (see underInit).
if (await h.underInit(import.meta.url)) {
  await h.requireTools();
  const s = await h.scratch("runc");
  const rootfs = await h.busyboxRootfs(s.dir);
  const logDir = `${s.dir}/logs`;
  const runc = new Runc({ root: s.runcRoot, logDir, timeoutMs: 30_000 });
  after(() => s.cleanup());

  test("create, state, ps, events --stats, update, kill, delete", { timeout: 60_000 }, async () => {
    const id = "r1";
    const bundle = await h.writeBundle(s.dir, rootfs, id, { args: ["sleep", "100"], cgroupParent: s.cgroupParent });
    const pidFile = `${s.dir}/r1.pid`;
    await runc.create(id, { bundle, pidFile });
    const st = await runc.state(id);
    assert.equal(st.id, id);
    assert.equal(st.status, "created");
    assert.equal(st.bundle, bundle);
    await runc.start(id);
    assert.equal((await runc.state(id)).status, "running");
    assert.deepEqual(await runc.ps(id), [st.pid]);
    await runc.update(id, { pids: { limit: 50 } });
    const stats = await runc.stats(id);
    assert.equal(stats.pids?.limit, 50);
    assert.ok((stats.memory?.usage?.usage ?? 0) > 0);
    await runc.kill(id, 9);
    for (let i = 0; i < 100 && (await runc.state(id)).status !== "stopped"; i++)
      await new Promise((r) => setTimeout(r, 20));
    await runc.delete(id);
    assert.deepEqual(readdirSync(logDir), [], "per-command log files are removed");
  });

  test("errors name the command, the id and runc's own message", async () => {
    const err = await runc.state("ghost").catch((e: unknown) => e);
    assert.ok(err instanceof RuncError);
    assert.equal(err.message, "runc state ghost failed: container does not exist");
    assert.ok(err.notExist);
    const bad = await new Runc({ binary: "/nonexistent/runc", root: s.runcRoot, logDir })
      .state("x")
      .catch((e: Error) => e);
    assert.match(String(bad), /runc state x failed: runc binary '\/nonexistent\/runc' not found/);
  });
}
