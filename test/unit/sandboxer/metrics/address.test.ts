import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError, parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { describeListen, parseMetricsListen } from "../../../../runtime/sandboxer/metrics/address.ts";

describe("parseMetricsListen", () => {
  test('"" is off', () => {
    assert.equal(parseMetricsListen(""), undefined);
  });

  test("unix:// takes a plain absolute path", () => {
    assert.deepEqual(parseMetricsListen("unix:///run/kuasar-vmm/metrics.sock"), {
      kind: "unix",
      path: "/run/kuasar-vmm/metrics.sock",
    });
    for (const bad of ["unix://run/m.sock", "unix://", "unix://@abstract", "unix:///run/../etc/m.sock"]) {
      assert.throws(() => parseMetricsListen(bad), /absolute path|plain absolute path/, bad);
    }
    assert.throws(() => parseMetricsListen("unix:///run//m.sock"), /plain absolute path/);
    assert.throws(() => parseMetricsListen("unix:///run/m/"), /plain absolute path/);
    assert.throws(() => parseMetricsListen(`unix:///${"a".repeat(120)}`), /longer than 107 bytes/);
  });

  test("loopback ports: 127.0.0.1, the rest of 127/8, [::1] and localhost (bound as 127.0.0.1)", () => {
    assert.deepEqual(parseMetricsListen("127.0.0.1:9464"), { kind: "tcp", host: "127.0.0.1", port: 9464 });
    assert.deepEqual(parseMetricsListen("127.0.0.2:1"), { kind: "tcp", host: "127.0.0.2", port: 1 });
    assert.deepEqual(parseMetricsListen("[::1]:65535"), { kind: "tcp", host: "::1", port: 65535 });
    assert.deepEqual(parseMetricsListen("localhost:9464"), { kind: "tcp", host: "127.0.0.1", port: 9464 });
    assert.equal(describeListen({ kind: "tcp", host: "::1", port: 9464 }), "[::1]:9464");
    assert.equal(describeListen({ kind: "unix", path: "/run/m.sock" }), "unix:///run/m.sock");
  });

  test("refuses every address that is not loopback, saying why", () => {
    for (const bad of ["0.0.0.0:9464", ":9464", "[::]:9464", "10.0.0.5:9464", "[fe80::1]:9464", "node-1:9464"]) {
      assert.throws(() => parseMetricsListen(bad), /is not a loopback address: the metrics name every pod/, bad);
    }
  });

  test("refuses malformed values and ports out of range", () => {
    assert.throws(() => parseMetricsListen("9464"), /expected "" \(off\), unix:\/\/\//);
    assert.throws(() => parseMetricsListen("http://127.0.0.1:9464"), /expected ""/);
    assert.throws(() => parseMetricsListen("::1:9464"), /in brackets: \[::1\]:PORT/);
    assert.throws(() => parseMetricsListen("127.0.0.1:0"), /port 0 is out of range/);
    assert.throws(() => parseMetricsListen("127.0.0.1:65536"), /port 65536 is out of range/);
    assert.throws(() => parseMetricsListen("127.0.0.1:"), /expected ""/);
  });
});

describe("[sandbox] metrics_listen in the configuration", () => {
  const QEMU = '[hypervisor]\ntype = "qemu"\n';
  const load = (value: string) =>
    parseConfig(`[sandbox]\nmetrics_listen = ${JSON.stringify(value)}\n${QEMU}`, "/etc/k.toml");

  test("defaults to off and takes a loopback address", () => {
    assert.equal(parseConfig(QEMU, "/etc/k.toml").config.sandbox.metrics_listen, "");
    assert.equal(
      load("unix:///run/kuasar-vmm/metrics.sock").config.sandbox.metrics_listen,
      "unix:///run/kuasar-vmm/metrics.sock",
    );
  });

  test("a public address is refused with the key and the value named", () => {
    const err = (() => {
      try {
        load("0.0.0.0:9464");
      } catch (e) {
        return e;
      }
      assert.fail("0.0.0.0:9464 was accepted");
    })();
    assert.ok(err instanceof ConfigError);
    assert.match(
      err.problems.join("\n"),
      /^sandbox\.metrics_listen: 0\.0\.0\.0 is not a loopback address.*found "0\.0\.0\.0:9464"/,
    );
  });

  test("a malformed value names the key", () => {
    assert.throws(() => load("metrics.sock"), /sandbox\.metrics_listen: expected "" \(off\)/);
  });
});
