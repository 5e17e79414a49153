import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { describeSchema } from "../../../../runtime/sandboxer/config/describe.ts";
import { TABLES } from "../../../../runtime/sandboxer/config/schema.ts";
import { CONFIG_DOC, renderConfigReference } from "../../../../scripts/gen-config-docs.ts";

test("docs/configuration.md is what the generator makes of the current schema", async () => {
  const have = await readFile(CONFIG_DOC, "utf8");
  assert.ok(
    have === renderConfigReference(),
    "docs/configuration.md is stale (the config schema changed): run `npx tsx scripts/gen-config-docs.ts` and commit it",
  );
});

test("the reference has a row for every key, under its table, with its default", () => {
  const doc = renderConfigReference();
  const sections = new Map(
    doc
      .split("\n## ")
      .slice(1)
      .map((s) => [s.slice(1, s.indexOf("]")), s] as const),
  );
  assert.deepEqual([...sections.keys()], Object.keys(TABLES));
  for (const row of describeSchema()) {
    const table = row.key.slice(0, row.key.lastIndexOf("."));
    const name = row.key.slice(row.key.lastIndexOf(".") + 1);
    const line = sections
      .get(table)!
      .split("\n")
      .find((l) => l.startsWith(`| \`${name}\` |`));
    assert.ok(line, `${row.key} has no row`);
    const first = row.defaults[row.hypervisors[0]!];
    assert.ok(
      line.includes(`\`${JSON.stringify(first).replace(/\|/g, "\\|")}\``),
      `${row.key}: default missing in ${line}`,
    );
  }
});
