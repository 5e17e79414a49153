import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, parseConfig } from "../../../runtime/sandboxer/config/load.ts";
import { DEFAULT_TRACING_ENDPOINT } from "../../../runtime/trace/endpoint.ts";

function load(sandbox: string) {
  return parseConfig(`[sandbox]\n${sandbox}\n\n[hypervisor]\ntype = "qemu"\n`, "/etc/kuasar/test.toml");
}

function problems(sandbox: string): string[] {
  try {
    load(sandbox);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail("expected a ConfigError");
}

test("tracing is off by default, with the OTLP/HTTP endpoint of a local collector", () => {
  const { config } = load("");
  assert.equal(config.sandbox.enable_tracing, false);
  assert.equal(config.sandbox.tracing_endpoint, DEFAULT_TRACING_ENDPOINT);
  assert.equal(DEFAULT_TRACING_ENDPOINT, "http://127.0.0.1:4318/v1/traces");
  assert.equal(config.hypervisor.task.enable_tracing, false);
});

test("an http or https endpoint is taken as given", () => {
  for (const url of ["https://otel.example:4318/v1/traces", "http://[::1]:4318/v1/traces"]) {
    assert.equal(load(`enable_tracing = true\ntracing_endpoint = "${url}"`).config.sandbox.tracing_endpoint, url);
  }
});

test("any other endpoint is refused, naming the key", () => {
  const cases: Array<[string, RegExp]> = [
    ["127.0.0.1:4318", /expected an http:\/\/ or https:\/\/ URL/],
    ["grpc://127.0.0.1:4317", /not grpc:\/\//],
    ["unix:///run/otel.sock", /not unix:\/\//],
    ["http://user:secret@collector:4318/v1/traces", /must not carry a user or password/],
    ["", /expected an http:\/\/ or https:\/\/ URL/],
  ];
  for (const [value, why] of cases) {
    const [p, ...rest] = problems(`tracing_endpoint = ${JSON.stringify(value)}`);
    assert.equal(rest.length, 0);
    assert.match(p!, /^sandbox\.tracing_endpoint: /, p);
    assert.match(p!, why);
  }
});
