import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

// "No cost when off": with tracing off, the daemon's and the agent's traced paths import nothing of OpenTelemetry.
// A loader hook in a child process records every @opentelemetry import.
async function imports(mode: "off" | "on"): Promise<{ out: string; otel: string[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "trace-lazy-"));
  const logFile = path.join(dir, "imports.log");
  try {
    const out = execFileSync(
      process.execPath,
      [
        "--import",
        "tsx",
        "--import",
        path.join(import.meta.dirname, "record-otel-hooks.mjs"),
        path.join(import.meta.dirname, "lazy-child.ts"),
        mode,
      ],
      { env: { ...process.env, OTEL_IMPORTS_LOG: logFile }, encoding: "utf8" },
    );
    const otel = (await readFile(logFile, "utf8").catch(() => "")).split("\n").filter(Boolean);
    return { out, otel };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("off: Controller calls, task API calls and the agent's handlers run without importing @opentelemetry", async () => {
  const { out, otel } = await imports("off");
  assert.match(out, /off done/);
  assert.deepEqual(otel, []);
});

test("on: the first enable imports the SDK and the OTLP exporter (so the check above can fail)", async () => {
  const { out, otel } = await imports("on");
  assert.match(out, /tracing on: spans go to/);
  for (const pkg of [
    "@opentelemetry/api",
    "@opentelemetry/sdk-trace-base",
    "@opentelemetry/exporter-trace-otlp-http",
  ]) {
    assert.ok(otel.includes(pkg), `${pkg} among ${otel.join(", ")}`);
  }
});
