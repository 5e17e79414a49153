import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_PARAMS, parseCmdline, splitCmdline } from "../../../runtime/task/cmdline.ts";
import { configureLog, logger } from "../../../runtime/task/log.ts";

test("defaults without task.* parameters", () => {
  assert.deepEqual(parseCmdline("console=ttyS0 root=/dev/vda rw quiet\n"), { ...DEFAULT_PARAMS, warnings: [] });
  assert.equal(DEFAULT_PARAMS.debugShell, "/bin/sh");
  assert.equal(DEFAULT_PARAMS.sharefsType, "9p");
  assert.equal(DEFAULT_PARAMS.logLevel, "info");
});

test("every known parameter", () => {
  const p = parseCmdline(
    "console=hvc0 task.sharefs_type=virtiofs task.log_level=DEBUG task.debug task.hybrid_vsock task.enable_tracing=1 task.debug_shell=/bin/ash",
  );
  assert.deepEqual(p, {
    sharefsType: "virtiofs",
    logLevel: "debug",
    debug: true,
    hybridVsock: true,
    enableTracing: true,
    debugShell: "/bin/ash",
    warnings: [],
  });
  assert.equal(parseCmdline("task.debug=0 task.log_level=warning").debug, false);
  assert.equal(parseCmdline("task.log_level=warning").logLevel, "warn");
});

test("bad values and unknown task.* keys warn and keep the defaults", () => {
  const p = parseCmdline(
    "task.sharefs_type=nfs task.log_level=loud task.debug=maybe task.hybrid_vsock=perhaps task.debug_shell=sh task.frobnicate=1",
  );
  assert.deepEqual({ ...p, warnings: [] }, { ...DEFAULT_PARAMS, warnings: [] });
  assert.equal(p.warnings.length, 6);
  for (const key of [
    "task.sharefs_type",
    "task.log_level",
    "task.debug",
    "task.hybrid_vsock",
    "task.debug_shell",
    "task.frobnicate",
  ]) {
    assert.ok(
      p.warnings.some((w) => w.includes(key)),
      `a warning names ${key}: ${p.warnings.join(" | ")}`,
    );
  }
});

test("task.hybrid_vsock: off unless the host says so; the last value wins like any kernel parameter", () => {
  // Off by default: a guest that is not told demands privileged source ports (the safe side).
  assert.equal(DEFAULT_PARAMS.hybridVsock, false);
  assert.equal(parseCmdline("console=ttyS0 task.debug").hybridVsock, false);
  assert.equal(parseCmdline("task.hybrid_vsock").hybridVsock, true);
  assert.equal(parseCmdline("task.hybrid_vsock=1").hybridVsock, true);
  assert.equal(parseCmdline("task.hybrid_vsock task.hybrid_vsock=0").hybridVsock, false);
  assert.equal(parseCmdline("task.hybrid_vsock=0 task.hybrid_vsock").hybridVsock, true);
  // A look-alike is not the flag.
  assert.equal(parseCmdline("xtask.hybrid_vsock task.hybrid_vsockx").hybridVsock, false);
});

test("double quotes group like the kernel's parser", () => {
  assert.deepEqual(splitCmdline(' a="b c"  "d=e f" g\n'), ["a=b c", "d=e f", "g"]);
  assert.equal(parseCmdline('task.debug_shell="/bin/sh"').debugShell, "/bin/sh");
});

test("log lines use Kuasar's format and the level filter", () => {
  const lines: string[] = [];
  configureLog({ level: "info", write: (l) => lines.push(l) });
  const log = logger("vmm_task");
  log.debug("hidden");
  log.info("shown");
  log.child("containers").error("boom");
  configureLog({ level: "info", write: (l) => process.stderr.write(l) });
  assert.equal(lines.length, 2);
  assert.match(lines[0]!, /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}vmm_task\] shown\n$/);
  assert.match(lines[1]!, /^\[\S+ ERROR vmm_task::containers\] boom\n$/);
});
