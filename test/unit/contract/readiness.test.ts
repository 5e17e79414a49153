import assert from "node:assert/strict";
import { test } from "node:test";
import { AGENT_PORT } from "../../../runtime/contract/ports.ts";
import { agentReadyLine, showsAgentReady } from "../../../runtime/contract/readiness.ts";

test("the host sees the line the agent writes in a guest, wherever it falls in the console", () => {
  const line = agentReadyLine(undefined, new Date("2025-01-02T03:04:05.678Z"));
  assert.equal(line, `[2025-01-02T03:04:05.678Z INFO  vmm_task] vmm-task serving ttrpc on vsock port ${AGENT_PORT}\n`);
  assert.ok(showsAgentReady(line));
  assert.ok(showsAgentReady(`[    1.234] Run /sbin/init\r\n${line.replace("\n", "\r\n")}[    2.000] more\r\n`));
});

test("a line that is not the agent serving on its port is not readiness", () => {
  const listening = agentReadyLine("unix:/tmp/agent.sock");
  assert.match(listening, /\] vmm-task serving ttrpc on unix:\/tmp\/agent\.sock\n$/);
  for (const text of [listening, "", "Linux version 6.12", "vmm-task serving ttrpc on vsock port 1025"]) {
    assert.equal(showsAgentReady(text), false, JSON.stringify(text));
  }
});
