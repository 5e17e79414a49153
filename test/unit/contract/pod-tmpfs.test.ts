import assert from "node:assert/strict";
import { test } from "node:test";
import {
  emptyDirKey,
  POD_SHM_KEY,
  podTmpfsMount,
  readPodTmpfsMount,
  validatePodTmpfsKey,
} from "../../../runtime/contract/pod-tmpfs.ts";

test("keys: the pod's shm and one per Kubernetes volume name; anything else is refused", () => {
  assert.equal(emptyDirKey("cache"), "empty-dir.cache");
  assert.equal(emptyDirKey("a-1"), "empty-dir.a-1");
  assert.equal(emptyDirKey("x".repeat(63)), `empty-dir.${"x".repeat(63)}`);
  for (const bad of ["", "Cache", "a_b", "a.b", "-a", "a-", "..", "a/b", "x".repeat(64)]) {
    assert.equal(emptyDirKey(bad), undefined, bad);
  }
  assert.equal(validatePodTmpfsKey(POD_SHM_KEY), undefined);
  assert.equal(validatePodTmpfsKey("empty-dir.cache"), undefined);
  // Keys name directories in the guest: no traversal, no other shape.
  for (const bad of [
    "",
    "shm/x",
    "../shm",
    "empty-dir.",
    "empty-dir.../../etc",
    "empty-dir.a/b",
    "other",
    "empty-dir",
  ]) {
    assert.match(validatePodTmpfsKey(bad) ?? "", /pod tmpfs key .* is invalid/, bad);
  }
});

test("a pod tmpfs mount reads back as it was written; other mounts are not pod tmpfs mounts", () => {
  const t = { key: "empty-dir.cache", sizeBytes: 8 << 20, flags: ["ro", "nosuid"] };
  const m = podTmpfsMount("/cache", t);
  assert.deepEqual(m, {
    destination: "/cache",
    type: "tmpfs",
    source: "kuasar-pod-tmpfs:empty-dir.cache",
    options: ["size=8388608", "ro", "nosuid"],
  });
  assert.deepEqual(readPodTmpfsMount(m), t);
  assert.equal(readPodTmpfsMount({ destination: "/dev/shm", type: "tmpfs", source: "shm" }), undefined);
  assert.equal(readPodTmpfsMount({ destination: "/proc", type: "proc", source: "proc" }), undefined);
});

test("malformed pod tmpfs mounts are refused naming the mount: key, type, size and option injection", () => {
  const mount = (source: string, options: string[], type = "tmpfs") => ({ destination: "/x", type, source, options });
  const cases: Array<[ReturnType<typeof mount>, RegExp]> = [
    [mount("kuasar-pod-tmpfs:../../etc", ["size=1"]), /mount "\/x": pod tmpfs key "\.\.\/\.\.\/etc" is invalid/],
    [mount("kuasar-pod-tmpfs:empty-dir.a/../../b", ["size=1"]), /is invalid/],
    [mount("kuasar-pod-tmpfs:shm", ["size=1"], "bind"), /must have type tmpfs, not "bind"/],
    [mount("kuasar-pod-tmpfs:shm", []), /needs one size=<bytes> option/],
    [mount("kuasar-pod-tmpfs:shm", ["size=0"]), /option "size=0" is not allowed/],
    [mount("kuasar-pod-tmpfs:shm", ["size=1,uid=0"]), /option "size=1,uid=0" is not allowed/],
    [mount("kuasar-pod-tmpfs:shm", ["size=1", "size=2"]), /option "size=2" is not allowed/],
    [mount("kuasar-pod-tmpfs:shm", ["size=50%"]), /option "size=50%" is not allowed/],
    [mount("kuasar-pod-tmpfs:shm", ["size=1", "exec"]), /option "exec" is not allowed/],
    [mount("kuasar-pod-tmpfs:shm", ["size=1", "rbind"]), /option "rbind" is not allowed/],
  ];
  for (const [m, want] of cases) assert.throws(() => readPodTmpfsMount(m), want, JSON.stringify(m));
});
