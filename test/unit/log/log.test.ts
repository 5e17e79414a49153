import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, test } from "node:test";
import { stderrIsJournal } from "../../../runtime/log/journal.ts";
import { configureLog, logger, MAX_MESSAGE, parseLevel } from "../../../runtime/log/log.ts";
import { MAX_VALUE } from "../../../runtime/log/logfmt.ts";

/** The lines written while fn runs, with the agent's padded levels or the daemon's. */
function captured(padLevel: boolean, fn: () => void, journal = false): string[] {
  const lines: string[] = [];
  configureLog({ padLevel, journal, write: (l) => lines.push(l) });
  fn();
  return lines;
}

/** The logfmt pairs after a line's `] `: what a log shipper (Loki, Vector) would index. Quoted values unescaped. */
function pairs(line: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const re = /(?:^| )([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^ \n]*)/g;
  const rest = line.slice(line.indexOf("] ") + 2);
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    const v = m[2]!;
    out.push([m[1]!, v.startsWith('"') ? v.slice(1, -1).replace(/\\(.)/g, "$1") : v]);
  }
  return out;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]/;

afterEach(() =>
  configureLog({ level: "info", padLevel: false, journal: false, write: (l) => process.stderr.write(l) }),
);

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
      assert.ok(!CONTROL.test(line), JSON.stringify(line));
      assert.ok(line.length < MAX_MESSAGE + 200, `${line.length} characters`);
    }
    assert.match(lines[0]!, /no such file\\n\[2025-01-01T00:00:00\.000Z INFO vmm_sandboxer\] sandbox web-0 stopped\n$/);
    assert.match(lines[3]!, /\.\.\. \(\d+ more characters cut\)\n$/);
  });
});

describe("fields", () => {
  test("follow the message as logfmt: bound by with(), kept by child(), a call's own last", () => {
    const log = logger("vmm_sandboxer").child("vm").with({ sandbox: "web-0" });
    const lines = captured(false, () => {
      log.info("vmm pid 42 started", { vmm_pid: 42, duration_ms: 1234 });
      log.child("console").with({ sandbox: "web-1", exec: undefined }).warn("cut", { ok: false });
      log.info("no fields of its own");
    });
    assert.match(
      lines[0]!,
      /^\[\S+ INFO vmm_sandboxer::vm\] vmm pid 42 started sandbox=web-0 vmm_pid=42 duration_ms=1234\n$/,
    );
    assert.match(lines[1]!, /^\[\S+ WARN vmm_sandboxer::vm::console\] cut sandbox=web-1 ok=false\n$/);
    assert.match(lines[2]!, /\] no fields of its own sandbox=web-0\n$/);
  });

  test("values that need it are quoted and escaped; odd keys are made logfmt keys", () => {
    const lines = captured(false, () =>
      logger("t").info("m", { path: "/run/kuasar vmm/a", empty: "", q: 'say "hi"', "bad key=": "v", u: "naïve" }),
    );
    assert.match(lines[0]!, /\] m path="\/run\/kuasar vmm\/a" empty="" q="say \\"hi\\"" bad_key_=v u=naïve\n$/);
    assert.deepEqual(pairs(lines[0]!), [
      ["path", "/run/kuasar vmm/a"],
      ["empty", ""],
      ["q", 'say "hi"'],
      ["bad_key_", "v"],
      ["u", "naïve"],
    ]);
  });

  test("attack: a value cannot add a field, end the line or run on without end", () => {
    const evil = [
      'x" sandbox=other level=error msg="',
      "a\nb=c\r\x1b[2J",
      "web-0 sandbox=other",
      `tab\there\u00a0nbsp\\" trailing=\\`,
      "y".repeat(MAX_VALUE * 3),
    ];
    const lines = captured(false, () => {
      for (const v of evil) logger("vmm_sandboxer").warn("exec failed", { container: v, exec: "e1" });
    });
    assert.equal(lines.length, evil.length);
    for (const [i, line] of lines.entries()) {
      assert.equal(line.indexOf("\n"), line.length - 1);
      assert.ok(!CONTROL.test(line), JSON.stringify(line));
      const p = pairs(line);
      assert.deepEqual(
        p.map(([k]) => k),
        ["container", "exec"],
        line,
      );
      assert.equal(p[1]![1], "e1");
      if (i < 4) assert.ok(!p[0]![1].includes("\n"));
    }
    assert.ok(lines[4]!.length < MAX_VALUE + 200);
    assert.match(lines[4]!, /more characters cut\)" exec=e1\n$/);
  });

  test("attack: text in the message or another field cannot carry one of the line's own keys", () => {
    const lines = captured(false, () =>
      logger("guest")
        .with({ sandbox: "web-0" })
        .info("hello sandbox=db-1 mysandbox=db-1", { note: "see sandbox=db-1" }),
    );
    assert.ok(!lines[0]!.includes("sandbox=db-1"), lines[0]);
    assert.match(
      lines[0]!,
      /\] hello sandbox\\x3ddb-1 mysandbox\\x3ddb-1 sandbox=web-0 note="see sandbox\\x3ddb-1"\n$/,
    );
    // An escape of the guest's own cannot pass for one: its backslash is doubled.
    const own = captured(false, () => logger("guest").with({ sandbox: "web-0" }).info("a sandbox\\x3dz"));
    assert.match(own[0]!, /\] a sandbox\\\\x3dz sandbox=web-0\n$/);
  });
});

describe("levels", () => {
  test("trace is below debug: written only at trace", () => {
    const log = logger("vmm_sandboxer");
    configureLog({ level: "debug" });
    assert.equal(captured(false, () => log.trace("hidden")).length, 0);
    assert.equal(log.enabled("trace"), false);
    configureLog({ level: "trace" });
    assert.equal(log.enabled("trace"), true);
    const lines = captured(true, () => log.trace("shown", { n: 1 }));
    assert.match(lines[0]!, /^\[\S+ TRACE vmm_sandboxer\] shown n=1\n$/);
  });

  test("log levels: Kuasar's names, any case, `warning` for warn; anything else names its source", () => {
    assert.equal(parseLevel("DEBUG", "--log-level"), "debug");
    assert.equal(parseLevel("TRACE", "--log-level"), "trace");
    assert.equal(parseLevel("warning", "sandbox.log_level"), "warn");
    for (const bad of ["loud", "", "constructor", "__proto__"]) {
      assert.throws(() => parseLevel(bad, "--log-level"), /^Error: --log-level: log level '.*' is not one of error/);
    }
  });
});

describe("journald", () => {
  test("each line starts with its sd-daemon priority", () => {
    configureLog({ level: "trace" });
    const log = logger("vmm_sandboxer");
    const lines = captured(
      false,
      () => {
        log.error("e");
        log.warn("w");
        log.info("i");
        log.debug("d");
        log.trace("t");
      },
      true,
    );
    assert.deepEqual(
      lines.map((l) => l.slice(0, 4)),
      ["<3>[", "<4>[", "<6>[", "<7>[", "<7>["],
    );
  });

  test("attack: a message cannot start a line with a priority of its own", () => {
    const lines = captured(
      false,
      () =>
        logger("guest").info("ok\n<3>[2025-01-01T00:00:00.000Z ERROR vmm_sandboxer] sandbox web-0 failed", {
          x: "\n<2>crit",
        }),
      true,
    );
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.indexOf("\n"), lines[0]!.length - 1);
    assert.match(lines[0]!, /^<6>\[\S+ INFO guest\] ok\\n<3>\[/);
  });

  test("stderr is the journal only when fd 2 is the stream JOURNAL_STREAM names", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "journal-"));
    const fd = openSync(path.join(dir, "stream"), "w");
    const other = openSync(path.join(dir, "other"), "w");
    try {
      const st = fstatSync(fd);
      assert.equal(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd), true);
      assert.equal(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, other), false);
      assert.equal(stderrIsJournal({}, fd), false);
      assert.equal(stderrIsJournal({ JOURNAL_STREAM: `${st.ino}` }, fd), false);
      assert.equal(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}x` }, fd), false);
    } finally {
      closeSync(fd);
      closeSync(other);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a program whose stderr is the JOURNAL_STREAM gets prefixed lines, one whose stderr was redirected does not", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "journal-"));
    const script = `import { logger } from ${JSON.stringify(path.resolve("runtime/log/log.ts"))};
      logger("vmm_sandboxer").warn("start failed", { sandbox: "web-0" });`;
    const run = (stream: string) => {
      const file = path.join(dir, stream);
      const fd = openSync(file, "w");
      const st = fstatSync(fd);
      const named = stream === "journal" ? st : fstatSync(openSync(path.join(dir, "elsewhere"), "w"));
      try {
        const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
          stdio: ["ignore", "ignore", fd],
          env: { ...process.env, JOURNAL_STREAM: `${named.dev}:${named.ino}` },
        });
        assert.equal(r.status, 0);
      } finally {
        closeSync(fd);
      }
      return readFileSync(file, "utf8");
    };
    try {
      assert.match(run("journal"), /^<4>\[\S+ WARN vmm_sandboxer\] start failed sandbox=web-0\n$/);
      assert.match(run("redirected"), /^\[\S+ WARN vmm_sandboxer\] start failed sandbox=web-0\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the agent's lines", () => {
  test("levels are padded like env_logger's, and the level filters", () => {
    const lines = captured(true, () => {
      const log = logger("vmm_task");
      log.debug("hidden");
      log.info("shown");
      log.child("containers").error("boom", { container: "c1" });
    });
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}vmm_task\] shown\n$/);
    assert.match(lines[1]!, /^\[\S+ ERROR vmm_task::containers\] boom container=c1\n$/);
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
      assert.ok(!CONTROL.test(line));
      assert.ok(line.length < MAX_MESSAGE + 200);
    }
    assert.match(
      lines[0]!,
      /^\[\S+ ERROR vmm_task::runc\] runc create: exec failed\\nvmm-task serving ttrpc on vsock port 1024\\x1b\[2K\\r\n$/,
    );
    assert.match(lines[1]!, /^\[\S+ WARN {2}vmm_task::runc\] \\u009b2Jy+\.\.\. \(\d+ more characters cut\)\n$/);
  });
});

test("writeStderrSync: every line reaches fd 2 whole and in order, 2 MB through a 64 KiB pipe", () => {
  const script = `
    const { writeStderrSync } = await import(${JSON.stringify(path.resolve("runtime/log/log.ts"))});
    for (let i = 0; i < 2000; i++) writeStderrSync(\`line \${i} \${"x".repeat(1000)}\\n\`);
  `;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  assert.equal(r.status, 0, r.stderr.slice(0, 2000));
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2000);
  for (const [i, l] of lines.entries()) assert.equal(l, `line ${i} ${"x".repeat(1000)}`);
});
