import assert from "node:assert/strict";
import { test } from "node:test";
import { SpanBuffer } from "../../../runtime/trace/span-buffer.ts";

test("keeps items in order and hands them out oldest first, by count and by bytes", () => {
  const b = new SpanBuffer<number>(10, 1000);
  for (let i = 0; i < 5; i++) assert.equal(b.push(i, 10), true);
  assert.deepEqual(b.take(2), { items: [0, 1], dropped: 0 });
  assert.deepEqual(b.take(10, 25), { items: [2, 3], dropped: 0 }, "a third item would pass 25 bytes");
  assert.deepEqual(b.take(10), { items: [4], dropped: 0 });
  assert.equal(b.length, 0);
});

test("attack: a flood stays within the count bound; the rest is dropped and counted, not queued", () => {
  const b = new SpanBuffer<number>(100, 1 << 20);
  for (let i = 0; i < 10_000; i++) b.push(i, 1);
  assert.equal(b.length, 100);
  const { items, dropped } = b.take(1000);
  assert.equal(items.length, 100);
  assert.equal(items[99], 99, "the newest are the ones dropped: what is buffered is never overwritten");
  assert.equal(dropped, 9900);
  assert.equal(b.take(1).dropped, 0, "the count restarts after each take");
});

test("attack: large items stay within the byte bound", () => {
  const b = new SpanBuffer<string>(1000, 1000);
  for (let i = 0; i < 50; i++) b.push(`x${i}`, 300);
  assert.equal(b.length, 3);
  assert.equal(b.take(1000).dropped, 47);
  // The bytes are given back as items are taken.
  assert.equal(b.push("again", 900), true);
});

test("a long-lived buffer does not keep what it handed out", () => {
  const b = new SpanBuffer<number>(1000, 1 << 20);
  for (let round = 0; round < 100; round++) {
    for (let i = 0; i < 100; i++) b.push(i, 1);
    assert.equal(b.take(100).items.length, 100);
  }
  const internal = (b as unknown as { items: unknown[] }).items;
  assert.ok(internal.length <= 200, `${internal.length} entries kept`);
});
