import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { adjustResources, adjustSpec, cgroupfsPath, prepareBundle } from "../../../runtime/agent/spec.ts";
import type { OciSpec } from "../../../runtime/contract/oci.ts";

const bundle = "/run/kuasar/state/c1";
const hostNs = (type: string) => ({ type, path: `/proc/4242/ns/${type === "network" ? "net" : type}` });

describe("adjustSpec", () => {
  const cases: { name: string; spec: OciSpec; opts?: object; expect: (s: OciSpec) => void }[] = [
    {
      name: "host namespace paths are dropped; the network namespace entry goes away",
      spec: {
        root: { path: "rootfs" },
        linux: { namespaces: ["pid", "ipc", "uts", "network", "mount"].map(hostNs) },
      },
      expect: (s) =>
        assert.deepEqual(s.linux?.namespaces, [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }]),
    },
    {
      name: "the pod's persistent ipc/uts namespaces are joined when they exist",
      spec: { root: { path: "rootfs" }, linux: { namespaces: ["pid", "ipc", "uts"].map(hostNs) } },
      opts: { sandboxNamespaces: { ipc: "/run/sandbox-ns/ipc", uts: "/run/sandbox-ns/uts" } },
      expect: (s) =>
        assert.deepEqual(s.linux?.namespaces, [
          { type: "pid" },
          { type: "ipc", path: "/run/sandbox-ns/ipc" },
          { type: "uts", path: "/run/sandbox-ns/uts" },
        ]),
    },
    {
      name: "a network namespace without a path (asked for explicitly) is kept",
      spec: { root: { path: "rootfs" }, linux: { namespaces: [{ type: "network" }] } },
      expect: (s) => assert.deepEqual(s.linux?.namespaces, [{ type: "network" }]),
    },
    {
      name: "a relative rootfs is resolved against the bundle (runc runs from the agent's own copy)",
      spec: { root: { path: "rootfs", readonly: true } },
      expect: (s) => assert.deepEqual(s.root, { path: `${bundle}/rootfs`, readonly: true }),
    },
    {
      name: "a guest storage rootfs outside the bundle is kept",
      spec: { root: { path: "/run/kuasar/state/storage0" } },
      expect: (s) => assert.equal(s.root?.path, "/run/kuasar/state/storage0"),
    },
    {
      name: "systemd cgroupsPath becomes the cgroupfs path",
      spec: { root: { path: "rootfs" }, linux: { cgroupsPath: "kubepods-besteffort-pod12.slice:cri-containerd:abc" } },
      expect: (s) =>
        assert.equal(
          s.linux?.cgroupsPath,
          "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope",
        ),
    },
    {
      name: "cgroupfs cgroupsPath is kept",
      spec: { root: { path: "rootfs" }, linux: { cgroupsPath: "/kubepods/besteffort/pod12/abc" } },
      expect: (s) => assert.equal(s.linux?.cgroupsPath, "/kubepods/besteffort/pod12/abc"),
    },
    {
      name: "host LSM labels the guest cannot apply are dropped; everything else is kept",
      spec: {
        ociVersion: "1.1.0",
        root: { path: "rootfs" },
        process: { args: ["sh"], apparmorProfile: "cri-containerd.apparmor.d", selinuxLabel: "x", env: ["A=1"] },
        linux: { mountLabel: "y", resources: { memory: { limit: 1 } } },
        annotations: { a: "b" },
      },
      expect: (s) =>
        assert.deepEqual(s, {
          ociVersion: "1.1.0",
          root: { path: `${bundle}/rootfs` },
          process: { args: ["sh"], env: ["A=1"] },
          linux: { resources: { memory: { limit: 1 } } },
          annotations: { a: "b" },
        }),
    },
    {
      name: "labels stay where the guest enforces that LSM",
      spec: { root: { path: "rootfs" }, process: { apparmorProfile: "p", selinuxLabel: "s" } },
      opts: { lsm: { apparmor: true, selinux: false } },
      expect: (s) => assert.deepEqual(s.process, { apparmorProfile: "p" }),
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const input = structuredClone(c.spec);
      c.expect(adjustSpec(c.spec, { bundle, ...c.opts }));
      assert.deepEqual(c.spec, input, "the input is not modified");
    });
  }

  test("a spec without root.path is rejected, naming the bundle", () => {
    assert.throws(
      () => adjustSpec({}, { bundle }),
      (e: unknown) => e instanceof TaskError && e.code === "InvalidArgument" && e.message.includes(bundle),
    );
  });
});

describe("cgroupfsPath", () => {
  const table: [string, string][] = [
    ["system.slice:docker:abc", "/system.slice/docker-abc.scope"],
    [":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"],
    ["-.slice:p:n", "/p-n.scope"],
    ["a-b.slice::n", "/a.slice/a-b.slice/n.scope"],
    ["kubepods.slice:p:sub.slice", "/kubepods.slice/sub.slice"],
    ["relative/path", "relative/path"],
    ["/abs/path", "/abs/path"],
  ];
  for (const [input, want] of table) test(`${input} -> ${want}`, () => assert.equal(cgroupfsPath(input), want));
  for (const bad of ["notaslice:p:n", "a--b.slice:p:n", "a.slice:p:"]) {
    test(`${bad} is rejected`, () =>
      assert.throws(
        () => cgroupfsPath(bad),
        (e: unknown) => e instanceof TaskError && e.message.includes(bad),
      ));
  }
});

test("prepareBundle writes the adjusted spec into the agent's own bundle and leaves the host's alone", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-spec-"));
  try {
    const spec: OciSpec = { root: { path: "rootfs" }, linux: { namespaces: [hostNs("network")] } };
    await mkdir(path.join(dir, "host"));
    await mkdir(path.join(dir, "agent"));
    await writeFile(path.join(dir, "host/config.json"), JSON.stringify(spec));
    await prepareBundle(path.join(dir, "host"), path.join(dir, "agent"), {
      sandboxNsDir: path.join(dir, "no-ns"),
      lsm: { apparmor: false, selinux: false },
    });
    assert.deepEqual(JSON.parse(await readFile(path.join(dir, "agent/config.json"), "utf8")), {
      root: { path: path.join(dir, "host/rootfs") },
      linux: { namespaces: [] },
    });
    assert.deepEqual(JSON.parse(await readFile(path.join(dir, "host/config.json"), "utf8")), spec);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a swap limit is dropped only where the guest kernel has no swap accounting", () => {
  const resources = { memory: { limit: 25165824, swap: 25165824 }, cpu: { shares: 2 } };
  const spec: OciSpec = { root: { path: "/b/rootfs" }, linux: { resources } };
  const noSwap = adjustSpec(spec, { bundle: "/b", swap: false });
  assert.deepEqual(noSwap.linux?.resources, { memory: { limit: 25165824 }, cpu: { shares: 2 } });
  assert.deepEqual(adjustSpec(spec, { bundle: "/b", swap: true }).linux?.resources, resources);
  assert.equal(adjustResources({ cpu: { shares: 2 } }, false).cpu.shares, 2, "nothing to drop: unchanged");
  assert.deepEqual(resources.memory.swap, 25165824, "the input is not modified");
});
