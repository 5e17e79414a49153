import assert from "node:assert/strict";
import { test } from "node:test";
import { readLock, shippedPackages } from "../../../pipeline/dist/npm.ts";

const LOCK = JSON.stringify({
  lockfileVersion: 3,
  packages: {
    "": { name: "kuasar-vmm", version: "0.1.0" },
    "node_modules/@grpc/grpc-js": { version: "1.14.7", license: "Apache-2.0", integrity: "sha512-AAAA" },
    "node_modules/path-key": { version: "3.1.1", license: "MIT" },
    "node_modules/npm-run-path/node_modules/path-key": { version: "4.0.0", license: "MIT" },
    "node_modules/npm-run-path": { version: "6.0.0" },
    "node_modules/typescript": { version: "5.9.3", dev: true },
    "node_modules/esbuild": { version: "0.28.2" },
  },
});

/** An unminified esbuild bundle: each module opens with a comment naming its path. */
const bundle = (...modules: string[]) =>
  ['"use strict";', "// runtime/sandboxer/main.ts", ...modules.map((m) => `// ${m}\nvar x = 1;`)].join("\n");

test("the packages a bundle holds, at their lock key: a nested copy is told from the top-level one", () => {
  const lock = readLock(LOCK);
  const found = shippedPackages(
    [
      {
        name: "bin/vmm-sandboxer",
        text: bundle("node_modules/@grpc/grpc-js/build/src/index.js", "node_modules/path-key/index.js"),
      },
      {
        name: "guest",
        text: bundle("node_modules/npm-run-path/node_modules/path-key/index.js", "node_modules/npm-run-path/index.js"),
      },
    ],
    lock,
  );
  assert.deepEqual(
    found.map((p) => `${p.key}@${p.version}`),
    [
      "node_modules/@grpc/grpc-js@1.14.7",
      "node_modules/npm-run-path@6.0.0",
      "node_modules/npm-run-path/node_modules/path-key@4.0.0",
      "node_modules/path-key@3.1.1",
    ],
  );
  // esbuild itself is a production dependency of the build, not of what ships: it is not listed.
  assert.ok(!found.some((p) => p.name === "esbuild"));
  assert.equal(found[0]!.name, "@grpc/grpc-js");
});

test("a node_modules reached through a link (../../repo/node_modules/...) still counts", () => {
  const found = shippedPackages(
    [{ name: "b", text: bundle("../../srv/checkout/node_modules/path-key/index.js") }],
    readLock(LOCK),
  );
  assert.deepEqual(
    found.map((p) => p.key),
    ["node_modules/path-key"],
  );
});

test("a minified bundle is refused rather than counted as holding nothing", () => {
  assert.throws(
    () => shippedPackages([{ name: "bin/kuasar-ctl", text: '"use strict";var a=require("x");' }], readLock(LOCK)),
    /bin\/kuasar-ctl has no esbuild module comments/,
  );
});

test("a module no lock package owns is an error naming it", () => {
  assert.throws(
    () => shippedPackages([{ name: "b", text: bundle("node_modules/left-pad/index.js") }], readLock(LOCK)),
    /b holds node_modules\/left-pad\/index.js, which no package in package-lock.json owns/,
  );
});

test("a lock without a packages map (lockfileVersion 1) is refused", () => {
  assert.throws(() => readLock(JSON.stringify({ lockfileVersion: 1, dependencies: {} })), /regenerate it with npm 7/);
});
