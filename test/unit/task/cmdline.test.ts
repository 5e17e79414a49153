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
    "console=hvc0 task.sharefs_type=virtiofs task.log_level=DEBUG task.debug task.enable_tracing=1 task.debug_shell=/bin/ash",
  );
  assert.deepEqual(p, {
    sharefsType: "virtiofs",
    logLevel: "debug",
    debug: true,
    enableTracing: true,
    debugShell: "/bin/ash",
    warnings: [],
  });
  assert.equal(parseCmdline("task.debug=0 task.log_level=warning").debug, false);
  assert.equal(parseCmdline("task.log_level=warning").logLevel, "warn");
});

test("bad values and unknown task.* keys warn and keep the defaults", () => {
  const p = parseCmdline(
    "task.sharefs_type=nfs task.log_level=loud task.debug=maybe task.debug_shell=sh task.frobnicate=1",
  );
  assert.deepEqual({ ...p, warnings: [] }, { ...DEFAULT_PARAMS, warnings: [] });
  assert.equal(p.warnings.length, 5);
  for (const key of ["task.sharefs_type", "task.log_level", "task.debug", "task.debug_shell", "task.frobnicate"]) {
    assert.ok(
      p.warnings.some((w) => w.includes(key)),
      `a warning names ${key}: ${p.warnings.join(" | ")}`,
    );
  }
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
