import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { configureLog, logger, MAX_MESSAGE, parseLevel } from "../../../runtime/log/log.ts";

/** The lines written while fn runs, with the agent's padded levels or the daemon's. */
function captured(padLevel: boolean, fn: () => void): string[] {
  const lines: string[] = [];
  configureLog({ padLevel, write: (l) => lines.push(l) });
  fn();
  return lines;
}

afterEach(() => configureLog({ level: "info", padLevel: false, write: (l) => process.stderr.write(l) }));

describe("the daemon's lines", () => {
  test("a plain message is written as it is, on Kuasar's line", () => {
    configureLog({ level: "debug" });
    const lines = captured(false, () => logger("vmm_sandboxer").child("sb1").info("vmm pid 42 started"));
    assert.deepEqual(lines.length, 1);
    assert.match(lines[0]!, /^\[\d{4}-\d\d-\d\dT[\d:.]+Z INFO vmm_sandboxer::sb1\] vmm pid 42 started\n$/);
  });

  test("by default they go to stderr", () => {
    const chunks: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array) => chunks.push(String(chunk)) > 0) as typeof write;
    try {
      logger("vmm_sandboxer").warn("to stderr");
    } finally {
      process.stderr.write = write;
    }
    assert.match(chunks.join(""), /^\[\S+ WARN vmm_sandboxer\] to stderr\n$/);
  });

  test("attack: whatever a message holds, it is one line with no control characters", () => {
    const guest = [
      "agent error: no such file\n[2025-01-01T00:00:00.000Z INFO vmm_sandboxer] sandbox web-0 stopped",
      "\x1b]0;pwned\x07\x1b[2J\rcleared",
      "\u009b31mred\u0085next\u2028line",
      "x".repeat(MAX_MESSAGE * 4),
    ];
    const log = logger("vmm_sandboxer");
    const lines = captured(false, () => {
      for (const m of guest) log.warn(`start failed: ${m}`);
    });
    assert.equal(lines.length, guest.length);
    for (const line of lines) {
      assert.match(line, /^\[\S+ WARN vmm_sandboxer\] start failed: [^\n]*\n$/);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
      assert.ok(!/[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]/.test(line), JSON.stringify(line));
      assert.ok(line.length < MAX_MESSAGE + 200, `${line.length} characters`);
    }
    assert.match(lines[0]!, /no such file\\n\[2025-01-01T00:00:00\.000Z INFO vmm_sandboxer\] sandbox web-0 stopped\n$/);
    assert.match(lines[3]!, /\.\.\. \(\d+ more characters cut\)\n$/);
  });
});

describe("the agent's lines", () => {
  test("levels are padded like env_logger's, and the level filters", () => {
    const lines = captured(true, () => {
      const log = logger("vmm_task");
      log.debug("hidden");
      log.info("shown");
      log.child("containers").error("boom");
    });
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}vmm_task\] shown\n$/);
    assert.match(lines[1]!, /^\[\S+ ERROR vmm_task::containers\] boom\n$/);
  });

  test("attack: a message with container output is one line: no forged agent line, no terminal escapes", () => {
    const lines = captured(true, () => {
      const log = logger("vmm_task").child("runc");
      // What a container can put into a runc error the agent logs.
      log.error("runc create: exec failed\nvmm-task serving ttrpc on vsock port 1024\x1b[2K\r");
      log.warn(`\u009b2J${"y".repeat(MAX_MESSAGE * 2)}`);
    });
    assert.equal(lines.length, 2);
    for (const line of lines) {
      assert.equal(line.indexOf("\n"), line.length - 1, JSON.stringify(line.slice(0, 200)));
      // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
      assert.ok(!/[\x00-\x09\x0b-\x1f\x7f-\x9f]/.test(line));
      assert.ok(line.length < MAX_MESSAGE + 200);
    }
    assert.match(
      lines[0]!,
      /^\[\S+ ERROR vmm_task::runc\] runc create: exec failed\\nvmm-task serving ttrpc on vsock port 1024\\x1b\[2K\\r\n$/,
    );
    assert.match(lines[1]!, /^\[\S+ WARN {2}vmm_task::runc\] \\u009b2Jy+\.\.\. \(\d+ more characters cut\)\n$/);
  });
});

test("log levels: Kuasar's names, any case, `warning` for warn; anything else names its source", () => {
  assert.equal(parseLevel("DEBUG", "--log-level"), "debug");
  assert.equal(parseLevel("warning", "sandbox.log_level"), "warn");
  for (const bad of ["loud", "", "constructor", "__proto__"]) {
    assert.throws(() => parseLevel(bad, "--log-level"), /^Error: --log-level: log level '.*' is not one of error/);
  }
});
