import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import { logger, MAX_MESSAGE, setLogLevel } from "../../../runtime/sandboxer/log.ts";

/** What the logger writes to stderr while fn runs. */
function captureStderr(fn: () => void): string {
  const chunks: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stderr.write = write;
  }
  return chunks.join("");
}

describe("the daemon's logger", () => {
  beforeEach(() => setLogLevel("debug"));
  afterEach(() => setLogLevel("info"));

  test("a plain message is written as it is, on Kuasar's line", () => {
    const out = captureStderr(() => logger("vmm_sandboxer").child("sb1").info("vmm pid 42 started"));
    assert.match(out, /^\[\d{4}-\d\d-\d\dT[\d:.]+Z INFO vmm_sandboxer::sb1\] vmm pid 42 started\n$/);
  });

  test("attack: whatever a message holds, it is one line with no control characters", () => {
    const guest = [
      "agent error: no such file\n[2025-01-01T00:00:00.000Z INFO vmm_sandboxer] sandbox web-0 stopped",
      "\x1b]0;pwned\x07\x1b[2J\rcleared",
      "\u009b31mred\u0085next\u2028line",
      "x".repeat(MAX_MESSAGE * 4),
    ];
    const log = logger("vmm_sandboxer");
    const out = captureStderr(() => {
      for (const m of guest) log.warn(`start failed: ${m}`);
    });
    const lines = out.split("\n");
    assert.equal(lines.pop(), "");
    assert.equal(lines.length, guest.length);
    for (const line of lines) {
      assert.match(line, /^\[\S+ WARN vmm_sandboxer\] start failed: /);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
      assert.ok(!/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(line), JSON.stringify(line));
      assert.ok(line.length < MAX_MESSAGE + 200, `${line.length} characters`);
    }
    assert.match(lines[0]!, /no such file\\n\[2025-01-01T00:00:00\.000Z INFO vmm_sandboxer\] sandbox web-0 stopped$/);
    assert.match(lines[3]!, /\.\.\. \(\d+ more characters cut\)$/);
  });
});
