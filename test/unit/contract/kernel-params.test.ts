import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DEFAULT_PARAMS,
  parseCmdline,
  splitCmdline,
  TASK_PARAMS,
  type TaskParamValues,
  taskParams,
} from "../../../runtime/contract/kernel-params.ts";

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

// The host's side: what kernelCmdline puts on the guest's command line.

test("the host writes what the guest reads back: every parameter, in table order, a flag only when on", () => {
  // A value other than the default for every parameter: a new one in TASK_PARAMS needs one here to compile.
  const set: TaskParamValues = {
    sharefsType: "virtiofs",
    logLevel: "trace",
    hybridVsock: true,
    debug: true,
    enableTracing: true,
    debugShell: "/bin/ash",
  };
  const written = taskParams(set);
  assert.deepEqual(written, [
    "task.sharefs_type=virtiofs",
    "task.log_level=trace",
    "task.hybrid_vsock",
    "task.debug",
    "task.enable_tracing",
    "task.debug_shell=/bin/ash",
  ]);
  assert.deepEqual(parseCmdline(written.join(" ")), { ...set, warnings: [] });
  for (const [key, value] of Object.entries(set)) assert.notDeepEqual(DEFAULT_PARAMS[key as keyof typeof set], value);
  // Off flags and absent values are left out: the guest's defaults stand.
  assert.deepEqual(taskParams({ sharefsType: "9p", logLevel: "info", hybridVsock: false, debug: false }), [
    "task.sharefs_type=9p",
    "task.log_level=info",
  ]);
});

test("the host refuses to write a value the guest would not read back as it is", () => {
  for (const [values, why] of [
    [
      { debugShell: "/bin/my shell" },
      /task\.debug_shell: "\/bin\/my shell" cannot be passed to the guest: the guest would read "\/bin\/my"/,
    ],
    [{ debugShell: '/bin/"sh"' }, /task\.debug_shell: .* the guest would read "\/bin\/sh"/],
    [{ debugShell: "sh" }, /task\.debug_shell: "sh" cannot be passed to the guest: .* must be an absolute path/],
    [
      { logLevel: "loud" as never },
      /task\.log_level: "loud" cannot be passed .* must be error, warn, info, debug or trace/,
    ],
    [{ sharefsType: "9p task.debug" as never }, /task\.sharefs_type: "9p task\.debug" cannot be passed/],
  ] as const) {
    assert.throws(() => taskParams(values), why);
  }
});

test("every parameter is documented and named task.*", () => {
  for (const p of Object.values(TASK_PARAMS)) {
    assert.match(p.name, /^task\.[a-z_]+$/);
    assert.ok(p.doc.length > 10, p.name);
  }
});
