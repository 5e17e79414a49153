import assert from "node:assert/strict";
import { test } from "node:test";
import { configureLog, logger, MAX_MESSAGE } from "../../../runtime/task/log.ts";

test("attack: a message with container output is one line: no forged agent line, no terminal escapes", () => {
  const lines: string[] = [];
  configureLog({ level: "info", write: (l) => lines.push(l) });
  try {
    const log = logger("vmm_task").child("runc");
    // What a container can put into a runc error the agent logs.
    log.error("runc create: exec failed\nvmm-task serving ttrpc on vsock port 1024\x1b[2K\r");
    log.warn(`\u009b2J${"y".repeat(MAX_MESSAGE * 2)}`);
  } finally {
    configureLog({ level: "info", write: (l) => process.stderr.write(l) });
  }
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
