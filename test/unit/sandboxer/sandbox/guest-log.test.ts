import assert from "node:assert/strict";
import { appendFile, mkdir, mkdtemp, rename, rm, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, afterEach, describe, test } from "node:test";
import { configureLog, logger } from "../../../../runtime/log/log.ts";
import {
  GUEST_LOG_LIMITS,
  GuestLog,
  type GuestLogLimits,
  guestLevel,
  LineSplitter,
} from "../../../../runtime/sandboxer/sandbox/guest-log.ts";

const root = await mkdtemp(path.join(os.tmpdir(), "guest-log-"));
after(() => rm(root, { recursive: true, force: true }));
afterEach(() => configureLog({ level: "info", journal: false, write: (l) => process.stderr.write(l) }));

let n = 0;
/** A fresh sandbox directory's console.log path (not created), and the daemon lines its GuestLog writes. */
async function setup(journal = false): Promise<{ file: string; lines: string[] }> {
  const dir = path.join(root, `sb${++n}`);
  await mkdir(dir);
  const lines: string[] = [];
  configureLog({ level: "info", journal, write: (l) => lines.push(l) });
  return { file: path.join(dir, "console.log"), lines };
}

const follow = (file: string, opts: { limits?: GuestLogLimits; now?: () => number } = {}) =>
  GuestLog.follow(file, logger("guest").with({ sandbox: "web-0" }), opts);

/** Resolves once pred holds on lines (checked every 20 ms; the test's own timeout bounds it). */
async function until(lines: string[], pred: (lines: string[]) => boolean): Promise<void> {
  while (!pred(lines)) await new Promise((r) => setTimeout(r, 20));
}

const AGENT = (level: string, msg: string) => `[2025-01-01T00:00:00.000Z ${level.padEnd(5)} vmm_task] ${msg}`;

describe("forwarding", () => {
  test("kernel and agent lines reach the daemon's log as the file grows, tagged with the sandbox", async () => {
    const { file, lines } = await setup();
    const g = await follow(file);
    await writeFile(file, "[    0.000000] Linux version 6.1.192 (kuasar)\r\n");
    await until(lines, (l) => l.length === 1);
    await appendFile(
      file,
      `${AGENT("INFO", "vmm-task serving ttrpc on vsock port 1024")}\n${AGENT("WARN", "cgroup controller missing")}\n` +
        `${AGENT("ERROR", "runc failed")}\n${AGENT("DEBUG", "hidden at info")}\nno newline yet`,
    );
    await until(lines, (l) => l.length === 4);
    await g.stop();
    assert.match(
      lines[0]!,
      /^\[\S+ INFO guest\] \[ {4}0\.000000\] Linux version 6\.1\.192 \(kuasar\) sandbox=web-0\n$/,
    );
    assert.match(lines[1]!, /^\[\S+ INFO guest\] \[\S+ INFO {2}vmm_task\] vmm-task serving ttrpc .* sandbox=web-0\n$/);
    assert.match(lines[2]!, /^\[\S+ WARN guest\] \[\S+ WARN {2}vmm_task\] cgroup controller missing sandbox=web-0\n$/);
    assert.match(lines[3]!, /^\[\S+ WARN guest\] \[\S+ ERROR vmm_task\] runc failed sandbox=web-0\n$/);
    // stop() forwards what the file still holds, a line without its end too.
    assert.match(lines[4]!, /^\[\S+ INFO guest\] no newline yet sandbox=web-0\n$/);
    assert.equal(lines.length, 5);
  });

  test("starts at the end of what the file holds: an earlier attempt's lines are not forwarded again", async () => {
    const { file, lines } = await setup();
    await writeFile(file, "old line\n");
    const g = await follow(file);
    await appendFile(file, "new line\n");
    await g.stop();
    assert.deepEqual(
      lines.map((l) => l.replace(/^\[\S+ /, "[")),
      ["[INFO guest] new line sandbox=web-0\n"],
    );
  });

  test("follows a rotation (a line split across the two files included) and a truncation", async () => {
    const { file, lines } = await setup();
    const g = await follow(file);
    await writeFile(file, "one\ntw");
    await until(lines, (l) => l.length === 1);
    // What ConsoleCapture does at console_log_max_mb: rename, then a new file.
    await rename(file, `${file}.1`);
    await writeFile(file, "o\nthree\n");
    await until(lines, (l) => l.length === 3);
    await truncate(file, 0);
    await appendFile(file, "four\n");
    await until(lines, (l) => l.length === 4);
    await g.stop();
    assert.deepEqual(
      lines.map((l) => /\] (.*) sandbox=web-0\n$/.exec(l)?.[1]),
      ["one", "two", "three", "four"],
    );
  });

  test("a file that appears only later is followed from its top; a directory removed under it ends nothing", async () => {
    const { file, lines } = await setup();
    const g = await follow(file);
    await writeFile(file, "first\n");
    await until(lines, (l) => l.length === 1);
    await rm(path.dirname(file), { recursive: true });
    await g.stop();
    assert.match(lines[0]!, /\] first sandbox=web-0\n$/);
  });
});

describe("what a guest can do", () => {
  test("attack: no console line makes a daemon error, a journald priority above warning or a line of its own", async () => {
    const { file, lines } = await setup(true);
    const g = await follow(file);
    const evil = [
      "<3>[2025-01-01T00:00:00.000Z ERROR vmm_sandboxer] sandbox web-1 failed",
      AGENT("ERROR", "fake agent error"),
      "[2025-01-01T00:00:00.000Z ERROR vmm_sandboxer::vm] start failed sandbox=web-1",
      "\x1b[1A\x1b[2K\r<0>[2025-01-01T00:00:00.000Z ERROR vmm_sandboxer] overwritten",
      "ok\r<2>[x ERROR y] carriage return",
      "\u2028<3>[x ERROR y] line separator\u0085next",
    ];
    await writeFile(file, `${evil.join("\n")}\n`);
    await g.stop();
    assert.equal(lines.length, evil.length);
    for (const line of lines) {
      assert.match(line, /^<[46]>\[\S+ (INFO|WARN) guest\] [^\n]* sandbox=web-0\n$/);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
      assert.ok(!/[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]/.test(line), JSON.stringify(line));
      assert.ok(!line.includes("sandbox=web-1"), line);
    }
    assert.match(lines[1]!, /^<4>\[\S+ WARN guest\] \[\S+ ERROR vmm_task\] fake agent error/);
    assert.match(lines[3]!, /\] \\x1b\[1A\\x1b\[2K\\r<0>\[/);
  });

  test("attack: a flood is cut to the burst, then the rate, with one note of what was dropped", async () => {
    const { file, lines } = await setup();
    let now = 1_000_000;
    const g = await follow(file, { now: () => now });
    const flood = (from: number, count: number) =>
      Array.from({ length: count }, (_, i) => `flood ${from + i}\n`).join("");
    await writeFile(file, flood(0, 100_000));
    await until(lines, (l) => l.length >= GUEST_LOG_LIMITS.burst);
    now += 1_000;
    await appendFile(file, flood(100_000, 1_000));
    await g.stop();
    const forwarded = lines.filter((l) => l.includes("] flood "));
    const notes = lines.filter((l) => l.includes("guest console lines dropped"));
    // The burst at once, then a second's worth at 50 lines/s.
    assert.equal(forwarded.length, GUEST_LOG_LIMITS.burst + GUEST_LOG_LIMITS.ratePerSec);
    const dropped = notes.map((l) => Number(/\] (\d+) guest console lines dropped/.exec(l)?.[1]));
    assert.equal(
      dropped.reduce((a, b) => a + b, 0),
      101_000 - forwarded.length,
    );
    assert.ok(notes.length <= 2, `${notes.length} notes`);
    assert.match(
      notes[0]!,
      /^\[\S+ WARN guest\] \d+ guest console lines dropped \(more than 50 lines\/s; see .*console\.log\)/,
    );
  });

  test("attack: a huge line without newline is held only up to the cap, and logged cut", async () => {
    const split = new LineSplitter(GUEST_LOG_LIMITS.maxLineBytes);
    const chunk = Buffer.alloc(64 * 1024, "x");
    let most = 0;
    for (let i = 0; i < 512; i++) {
      assert.deepEqual(split.push(chunk), []);
      most = Math.max(most, split.held);
    }
    assert.equal(most, GUEST_LOG_LIMITS.maxLineBytes);
    const [line] = split.push(Buffer.from("\nnext"));
    assert.equal(line!.text.length, GUEST_LOG_LIMITS.maxLineBytes);
    assert.equal(line!.cut, 512 * chunk.length - GUEST_LOG_LIMITS.maxLineBytes);
    assert.deepEqual(split.flush(), { text: "next", cut: 0 });

    const { file, lines } = await setup();
    const g = await follow(file);
    await writeFile(file, "y".repeat(8 << 20));
    await g.stop();
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /\] y{4096}\.\.\. \(8384512 more bytes cut\) sandbox=web-0\n$/);
  });
});

test("levels: an agent line's own, at most warn; anything else info", () => {
  assert.equal(guestLevel("[    1.234] Linux version"), "info");
  assert.equal(guestLevel(AGENT("ERROR", "x")), "warn");
  assert.equal(guestLevel(AGENT("WARN", "x")), "warn");
  assert.equal(guestLevel(AGENT("DEBUG", "x")), "debug");
  assert.equal(guestLevel(AGENT("TRACE", "x")), "trace");
  assert.equal(guestLevel("[2025-01-01T00:00:00.000Z ERROR]"), "info");
  assert.equal(guestLevel(`x${AGENT("WARN", "not at the start")}`), "info");
});
