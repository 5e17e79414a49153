import assert from "node:assert/strict";
import { test } from "node:test";
import { cycloneDx, debPurl, integrityHash, npmPurl, type SbomInput } from "../../../pipeline/dist/sbom.ts";
import { cycloneDxErrors } from "./dist-cyclonedx.ts";

const sha = (c: string) => c.repeat(64);

function input(): SbomInput {
  return {
    version: "1.2.3",
    epoch: 1700000000,
    npm: [
      {
        key: "node_modules/@grpc/grpc-js",
        name: "@grpc/grpc-js",
        version: "1.14.7",
        integrity: "sha512-W4W/fcBMGRVtG6dW2c7cw2mnpS3hvbBd+oQXjh2iYFTZDk1JJmcNqkM5KSaPubQpamlUUurrlb7G1s9NJeERmQ==",
        license: "Apache-2.0",
        dev: false,
      },
      { key: "node_modules/path-key", name: "path-key", version: "3.1.1", dev: false },
      // A nested copy of the same name: its own bom-ref.
      { key: "node_modules/npm-run-path/node_modules/path-key", name: "path-key", version: "4.0.0", dev: false },
    ],
    debian: {
      distro: "debian-12",
      packages: [
        { name: "busybox-static", version: "1:1.35.0-4+deb12u1+b1", arch: "amd64", files: ["/bin/busybox"] },
        { name: "libc6", version: "2.36-9+deb12u14", arch: "amd64", files: ["/lib/x86_64-linux-gnu/libc.so.6"] },
      ],
    },
    guestFiles: [{ path: "/usr/bin/node", sha256: sha("a"), version: "20.20.2" }],
    kernel: {
      version: "6.1.192",
      configSha256: sha("c"),
      sha256: sha("d"),
      profile: "micro",
      hypervisors: ["qemu"],
      source: { kind: "tarball", location: "/usr/src/linux-source-6.1.tar.xz", sha256: sha("e") },
      sourcePackage: { name: "linux-source-6.1", version: "6.1.192-3", arch: "all" },
      patches: [{ file: "kernel-configs/patches/0001-x.patch", sha256: sha("b") }],
    },
    node: { version: "v20.20.2", sha256: sha("f") },
  };
}

const components = (bom: Record<string, unknown>) => bom.components as Record<string, unknown>[];

test("the SBOM meets the CycloneDX 1.5 schema's rules for every field it writes", () => {
  const bom = cycloneDx(input());
  assert.deepEqual(cycloneDxErrors(bom), []);
  assert.equal(bom.bomFormat, "CycloneDX");
  assert.equal(bom.specVersion, "1.5");
  assert.deepEqual((bom.metadata as { component: unknown }).component, {
    type: "application",
    "bom-ref": "kuasar-vmm@1.2.3",
    name: "kuasar-vmm",
    version: "1.2.3",
  });
  assert.equal((bom.metadata as { timestamp: string }).timestamp, "2023-11-14T22:13:20.000Z");
});

test("the validator is not vacuous: it names what a broken BOM gets wrong", () => {
  const bom = cycloneDx(input());
  const broken = structuredClone(bom) as Record<string, unknown>;
  delete components(broken)[0]!.name;
  components(broken)[1]!.type = "npm";
  (components(broken)[2] as { hashes?: unknown }).hashes = [{ alg: "sha256", content: "xyz" }];
  components(broken)[3]!["bom-ref"] = components(broken)[4]!["bom-ref"];
  const kernel = components(broken).find((c) => c.type === "operating-system")!;
  (kernel.pedigree as { patches: unknown[] }).patches = [{ type: "local", diff: { url: "x", sha256: "y" } }];
  broken.extra = true;
  delete broken.version;
  const errors = cycloneDxErrors(broken).join("\n");
  for (const want of [
    /components\[0\]: 'name' is required/,
    /components\[1\]\.type 'npm'/,
    /components\[2\]\.hashes\[0\]\.alg 'sha256'/,
    /components\[2\]\.hashes\[0\]\.content is not hex/,
    /bom-ref .* is not unique/,
    /pedigree\.patches\[0\]\.type 'local'/,
    /pedigree\.patches\[0\]\.diff: property 'sha256' is not allowed/,
    /property 'extra' is not allowed/,
    /'version' is required/,
  ]) {
    assert.match(errors, want);
  }
});

test("npm packages: purl, lock integrity as a hex hash, license; nested copies stay apart", () => {
  const bom = cycloneDx(input());
  const grpc = components(bom).find((c) => c.name === "@grpc/grpc-js")!;
  assert.equal(grpc.purl, "pkg:npm/%40grpc/grpc-js@1.14.7");
  assert.deepEqual(grpc.licenses, [{ expression: "Apache-2.0" }]);
  assert.deepEqual(grpc.hashes, [
    {
      alg: "SHA-512",
      content:
        "5b85bf7dc04c19156d1ba756d9cedcc369a7a52de1bdb05dfa84178e1da26054d90e4d4926670daa433929268fb9b4296a695452eaeb95bec6d6cf4d25e11199",
    },
  ]);
  const pathKeys = components(bom).filter((c) => c.name === "path-key");
  assert.deepEqual(
    pathKeys.map((c) => [c.version, c["bom-ref"]]),
    [
      ["3.1.1", "npm:node_modules/path-key"],
      ["4.0.0", "npm:node_modules/npm-run-path/node_modules/path-key"],
    ],
  );
  assert.equal(npmPurl("smol-toml", "1.9.1"), "pkg:npm/smol-toml@1.9.1");
  assert.equal(integrityHash("md5-abc"), undefined, "an algorithm CycloneDX may not name is left out");
});

test("Debian packages carry their version, architecture and distro in the purl, and the guest files they gave", () => {
  const bom = cycloneDx(input());
  const bb = components(bom).find((c) => c.name === "busybox-static")!;
  assert.equal(bb.version, "1:1.35.0-4+deb12u1+b1");
  assert.equal(bb.purl, "pkg:deb/debian/busybox-static@1%3A1.35.0-4%2Bdeb12u1%2Bb1?arch=amd64&distro=debian-12");
  assert.deepEqual(bb.properties, [{ name: "kuasar:guest:file", value: "/bin/busybox" }]);
  assert.equal(debPurl("libstdc++6", "12.2.0-14", "amd64", "debian-12").split("@")[0], "pkg:deb/debian/libstdc%2B%2B6");
});

test("the kernel: version, config digest, source, its Debian package and patches; the node runtime's version", () => {
  const bom = cycloneDx(input());
  const k = components(bom).find((c) => c.type === "operating-system")!;
  assert.equal(k.version, "6.1.192");
  const props = k.properties as { name: string; value: string }[];
  assert.ok(props.some((p) => p.name === "kuasar:kernel:config-sha256" && p.value === sha("c")));
  assert.ok(props.some((p) => p.name === "kuasar:kernel:source-sha256" && p.value === sha("e")));
  assert.ok(
    props.some(
      (p) => p.name === "kuasar:kernel:patch" && p.value === `kernel-configs/patches/0001-x.patch sha256:${sha("b")}`,
    ),
  );
  const pedigree = k.pedigree as { ancestors: { purl: string }[]; patches: unknown[] };
  assert.deepEqual(pedigree.ancestors[0]!.purl, debPurl("linux-source-6.1", "6.1.192-3", "all", "debian-12"));
  assert.deepEqual(pedigree.patches, [{ type: "unofficial", diff: { url: "kernel-configs/patches/0001-x.patch" } }]);
  const node = components(bom).find((c) => c.type === "platform")!;
  assert.deepEqual([node.name, node.version], ["node", "20.20.2"]);
  const guestNode = components(bom).find((c) => c.type === "file")!;
  assert.deepEqual([guestNode.name, guestNode.version], ["/usr/bin/node", "20.20.2"]);
});

test("the same input gives the same bytes; other content gets another serial number", () => {
  const a = JSON.stringify(cycloneDx(input()));
  assert.equal(JSON.stringify(cycloneDx(input())), a);
  const other = input();
  other.kernel.configSha256 = sha("9");
  assert.notEqual(cycloneDx(other).serialNumber, JSON.parse(a).serialNumber);
});

test("two components with one bom-ref are refused", () => {
  const dup = input();
  dup.npm.push({ ...dup.npm[1]! });
  assert.throws(() => cycloneDx(dup), /two components share the bom-ref npm:node_modules\/path-key/);
});
