import assert from "node:assert/strict";
import { test } from "node:test";
import { firstValue, sampledTraceparent, traceIdOf } from "../../../runtime/trace/traceparent.ts";

const TRACE = "0af7651916cd43dd8448eb211c80319c";
const SPAN = "b7ad6b7169203331";

test("only a well-formed, sampled version-00 traceparent asks for a span", () => {
  assert.equal(sampledTraceparent(`00-${TRACE}-${SPAN}-01`), true);
  assert.equal(sampledTraceparent(`00-${TRACE}-${SPAN}-03`), true, "other flags beside sampled");
  assert.equal(sampledTraceparent(`00-${TRACE}-${SPAN}-00`), false, "not sampled");
  assert.equal(sampledTraceparent(undefined), false);
  for (const bad of [
    `01-${TRACE}-${SPAN}-01`,
    `00-${TRACE.toUpperCase()}-${SPAN}-01`,
    `00-${TRACE}-${SPAN}-01-extra`,
    `00-${TRACE.slice(1)}-${SPAN}-01`,
    `00-${TRACE}-${SPAN}`,
    "",
  ]) {
    assert.equal(sampledTraceparent(bad), false, bad);
  }
  assert.equal(traceIdOf(`00-${TRACE}-${SPAN}-01`), TRACE);
  assert.equal(traceIdOf("garbage"), undefined);
});

test("the first metadata value is taken only when it is a string", () => {
  assert.equal(firstValue(["a", "b"]), "a");
  assert.equal(firstValue([Buffer.from("a")]), undefined);
  assert.equal(firstValue(undefined), undefined);
});
