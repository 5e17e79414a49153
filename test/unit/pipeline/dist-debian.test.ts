import assert from "node:assert/strict";
import { test } from "node:test";
import {
  attribute,
  type HostPackages,
  osReleaseDistro,
  parseOwners,
  pathVariants,
} from "../../../pipeline/dist/debian.ts";

const sha = (c: string) => c.repeat(64);

/** A host whose files, owners and versions are given: what dpkg and the file system would say. */
function fakeHost(files: Record<string, string>, owners: Record<string, string>, versions: Record<string, string>) {
  const asked: string[][] = [];
  const host: HostPackages = {
    digest: async (p) => files[p],
    owners: async (paths) => {
      asked.push(paths);
      return new Map(paths.filter((p) => owners[p]).map((p) => [p, owners[p]!]));
    },
    versions: async (pkgs) =>
      new Map(pkgs.filter((p) => versions[p]).map((p) => [p, { version: versions[p]!, arch: "amd64" }])),
    distro: async () => "debian-12",
  };
  return { host, asked };
}

test("a guest file is credited to the package that owns the same bytes on the host, /usr-merged or not", async () => {
  const { host } = fakeHost(
    {
      "/lib/x86_64-linux-gnu/libseccomp.so.2": sha("1"),
      "/usr/lib/x86_64-linux-gnu/libseccomp.so.2": sha("1"),
      "/bin/busybox": sha("2"),
      "/usr/bin/busybox": sha("2"),
    },
    // dpkg knows the library under the name its package ships (/usr/lib), busybox under /bin.
    { "/usr/lib/x86_64-linux-gnu/libseccomp.so.2": "libseccomp2", "/bin/busybox": "busybox-static" },
    { libseccomp2: "2.5.4-1+deb12u1", "busybox-static": "1:1.35.0-4+deb12u1+b1" },
  );
  const r = await attribute(
    [
      { path: "/lib/x86_64-linux-gnu/libseccomp.so.2", sha256: sha("1") },
      { path: "/bin/busybox", sha256: sha("2") },
    ],
    host,
  );
  assert.deepEqual(r.packages, [
    { name: "busybox-static", version: "1:1.35.0-4+deb12u1+b1", arch: "amd64", files: ["/bin/busybox"] },
    {
      name: "libseccomp2",
      version: "2.5.4-1+deb12u1",
      arch: "amd64",
      files: ["/lib/x86_64-linux-gnu/libseccomp.so.2"],
    },
  ]);
  assert.deepEqual(r.unattributed, []);
});

test("a guest file whose bytes differ from the host's is never credited to the package owning that path", async () => {
  // The guest's node was stripped (or came from elsewhere): dpkg owns /usr/bin/node, but not these bytes.
  const { host, asked } = fakeHost({ "/usr/bin/node": sha("3") }, { "/usr/bin/node": "nodejs" }, { nodejs: "20.20.2" });
  const r = await attribute([{ path: "/usr/bin/node", sha256: sha("4") }], host);
  assert.deepEqual(r.packages, []);
  assert.deepEqual(r.unattributed, [{ path: "/usr/bin/node", sha256: sha("4") }]);
  assert.deepEqual(asked, [[]], "dpkg is not even asked about it");
});

test("same bytes that no package owns stay unattributed; an owner dpkg does not list as installed is an error", async () => {
  const lone = fakeHost({ "/opt/x": sha("5") }, {}, {});
  assert.deepEqual((await attribute([{ path: "/opt/x", sha256: sha("5") }], lone.host)).unattributed, [
    { path: "/opt/x", sha256: sha("5") },
  ]);
  const gone = fakeHost({ "/opt/x": sha("5") }, { "/opt/x": "removed-pkg" }, {});
  await assert.rejects(
    attribute([{ path: "/opt/x", sha256: sha("5") }], gone.host),
    /removed-pkg .* not list it as installed/,
  );
});

test("dpkg-query -S output: multi-arch names, shared paths and diversions", () => {
  const owners = parseOwners(
    [
      "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6",
      "diversion by dash from: /bin/sh",
      "libgcc-s1:amd64, libgcc-s1:i386: /usr/share/doc/x",
      "runc: /usr/sbin/runc",
      "",
    ].join("\n"),
  );
  assert.deepEqual(Object.fromEntries(owners), {
    "/lib/x86_64-linux-gnu/libc.so.6": "libc6",
    "/usr/share/doc/x": "libgcc-s1",
    "/usr/sbin/runc": "runc",
  });
});

test("path variants and the distro name", () => {
  assert.deepEqual(pathVariants("/lib64/ld-linux-x86-64.so.2"), [
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/lib64/ld-linux-x86-64.so.2",
  ]);
  assert.deepEqual(pathVariants("/usr/sbin/runc"), ["/usr/sbin/runc", "/sbin/runc"]);
  assert.deepEqual(pathVariants("/etc/passwd"), ["/etc/passwd"]);
  assert.equal(
    osReleaseDistro('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'),
    "debian-12",
  );
  assert.equal(osReleaseDistro("ID=debian\n"), "debian");
  assert.throws(() => osReleaseDistro("NAME=x\n"), /has no ID/);
});
