import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { ConfigError, loadConfig, parseConfig } from "../../runtime/sandboxer/config/load.ts";
import { type Config, TABLES } from "../../runtime/sandboxer/config/schema.ts";
import type { Field } from "../../runtime/sandboxer/config/schema-lang.ts";
import { repo } from "../../testkit/daemon.ts";
import { fuzzSeed, rng, withSeed } from "../../testkit/rng.ts";

// Mutated TOML (bytes, lines, values, tables, prototype keys) through the config loader: it returns a config whose
// every key has its schema's type and range, or throws its ConfigError naming the file; nothing else.
const SEED = fuzzSeed("config fuzz");
const CASES = 30_000;
const FILE = "/etc/kuasar/fuzzed config.toml";

const seeds = [
  ...readdirSync(path.join(repo, "installers/config")).map((f) => path.join(repo, "installers/config", f)),
  ...readdirSync(path.join(repo, "test/unit/sandboxer/fixtures"))
    .filter((f) => f.endsWith(".toml"))
    .map((f) => path.join(repo, "test/unit/sandboxer/fixtures", f)),
].map((f) => readFileSync(f, "utf8"));

const VALUES = [
  "0",
  "-1",
  "99999999999999999999999",
  "1.5",
  "nan",
  "inf",
  "true",
  '"true"',
  '""',
  '"relative/path"',
  '"/abs/path"',
  "'''multi\nline'''",
  "[]",
  '["a", 1]',
  "{}",
  "{ a = 1 }",
  "1979-05-27T07:32:00Z",
  '"\\u0000"',
  '"qemu"',
  '"VirtioFS"',
  "0x7fffffff",
];
const FRAGMENTS = [
  "[",
  "]",
  "=",
  '"',
  "'",
  "\n",
  "#",
  ".",
  "[[hypervisor]]\n",
  "[hypervisor]\n",
  "[hypervisor.task.deeper]\n",
  "__proto__ = 1\n",
  "[__proto__]\nx = 1\n",
  "constructor = 2\n",
  "hypervisor = 3\n",
  "sandbox.log_level = 'debug'\n",
  'hypervisor.type = "stratovirt"\n',
  "\uFEFF",
  "\u0000",
  "é",
];

function mutate(random: () => number, text: string): string {
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  let lines = text.split("\n");
  for (let n = 1 + int(4); n > 0; n--) {
    const i = int(lines.length);
    switch (int(7)) {
      case 0: // a value replaced by one of another type or range
        lines[i] = lines[i]!.replace(/=.*$/, `= ${pick(VALUES)}`);
        break;
      case 1:
        lines.splice(i, 1);
        break;
      case 2:
        lines.splice(i, 0, lines[int(lines.length)]!);
        break;
      case 3:
        lines.splice(i, 0, pick(FRAGMENTS));
        break;
      default: {
        const s = lines.join("\n");
        const at = int(s.length + 1);
        const cut = int(3);
        const ins = random() < 0.5 ? pick(FRAGMENTS) : String.fromCharCode(int(128));
        lines = (s.slice(0, at) + ins + s.slice(at + cut)).split("\n");
      }
    }
  }
  return lines.join("\n");
}

/** What is wrong with a value the loader accepted for field f, if anything. */
function badValue(f: Field, v: unknown): string | undefined {
  switch (f.type) {
    case "integer":
      return Number.isInteger(v) && (v as number) >= f.min && (v as number) <= f.max ? undefined : "out of schema";
    case "enum":
      return (f.values as readonly unknown[]).includes(v) ? undefined : "not an allowed value";
    case "boolean":
      return typeof v === "boolean" ? undefined : "not a boolean";
    case "string":
      return typeof v === "string" && !f.check?.(v) ? undefined : "not a valid string";
    case "string-list":
      return Array.isArray(v) && v.every((x) => typeof x === "string") ? undefined : "not a string list";
  }
}

function checkAccepted(config: Config): string[] {
  const out: string[] = [];
  const tableOf: Record<string, Record<string, unknown>> = {
    sandbox: config.sandbox,
    hypervisor: config.hypervisor,
    "hypervisor.task": config.hypervisor.task,
    "hypervisor.virtiofsd": config.hypervisor.virtiofsd,
    "hypervisor.virtiofsd_conf": config.hypervisor.virtiofsd_conf,
  };
  for (const [table, { fields }] of Object.entries(TABLES)) {
    for (const [name, f] of Object.entries(fields)) {
      const bad = badValue(f, tableOf[table]![name]);
      if (bad) out.push(`${table}.${name} = ${JSON.stringify(tableOf[table]![name])}: ${bad}`);
    }
  }
  if (Object.getPrototypeOf(config.hypervisor) !== Object.prototype) out.push("hypervisor's prototype was replaced");
  return out;
}

test(`${CASES} mutated config files: a valid config or a ConfigError naming the file, nothing else`, () =>
  withSeed(SEED, mutatedConfigs));

function mutatedConfigs(): void {
  const random = rng(SEED);
  let accepted = 0;
  let refused = 0;
  const t0 = Date.now();
  for (let i = 0; i < CASES; i++) {
    const text = mutate(random, seeds[Math.floor(random() * seeds.length)]!);
    try {
      const { config, warnings } = parseConfig(text, FILE);
      const bad = checkAccepted(config);
      assert.deepEqual(bad, [], `case ${i} was accepted with bad values:\n${text}`);
      assert.ok(
        warnings.every((w) => w.startsWith(`${FILE}: `)),
        `case ${i}: a warning without the file: ${warnings.join("; ")}`,
      );
      accepted++;
    } catch (err) {
      if (!(err instanceof ConfigError)) {
        assert.fail(`case ${i} threw ${(err as Error)?.name}: ${(err as Error)?.message}\n${text}`);
      }
      assert.ok(err.message.includes(FILE) && err.problems.length > 0, `case ${i}: ${err.message}`);
      refused++;
    }
  }
  console.log(`config fuzz: ${CASES} cases in ${Date.now() - t0} ms, ${accepted} accepted, ${refused} refused`);
  assert.ok(
    accepted > CASES / 50 && refused > CASES / 2,
    `accepted ${accepted}, refused ${refused}: mutations drifted`,
  );
}

test("loadConfig on unreadable, binary and huge files gives its ConfigError naming the file", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "rel-config-"));
  try {
    const cases: [string, string | Buffer | undefined][] = [
      ["missing.toml", undefined],
      ["binary.toml", Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131) % 256))],
      ["huge.toml", `[sandbox]\n${"# comment\n".repeat(200_000)}log_level = ${"[".repeat(5000)}`],
      ["dir.toml", "DIR"],
    ];
    for (const [name, content] of cases) {
      const file = path.join(dir, name);
      if (content === "DIR") await mkdir(file);
      else if (content !== undefined) await writeFile(file, content);
      await assert.rejects(loadConfig(file), (e: Error) => {
        assert.ok(e instanceof ConfigError, `${name}: ${e.name}: ${e.message}`);
        assert.ok(e.message.includes(file), `${name}: ${e.message}`);
        return true;
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
