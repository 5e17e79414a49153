import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyedSerial } from "../../../runtime/agent/keyed-serial.ts";

/** A promise and the function that settles it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = () => {};
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

test("operations on one key run one at a time in call order, even after a failure", async () => {
  const serial = new KeyedSerial();
  const order: string[] = [];
  const first = gate();
  const a = serial.run("c1", async () => {
    order.push("a start");
    await first.wait;
    order.push("a end");
    throw new Error("a failed");
  });
  const b = serial.run("c1", async () => {
    order.push("b");
    return 2;
  });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ["a start"], "b must wait for a");
  first.open();
  await assert.rejects(a, /a failed/);
  assert.equal(await b, 2);
  assert.deepEqual(order, ["a start", "a end", "b"]);
});

test("operations on different keys overlap", async () => {
  const serial = new KeyedSerial();
  const held = gate();
  const slow = serial.run("c1", () => held.wait);
  assert.equal(await serial.run("c2", async () => "other key ran"), "other key ran");
  held.open();
  await slow;
});
