import assert from "node:assert/strict";
import { test } from "node:test";
import type { DiskSpec } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { PodDisks } from "../../../../runtime/sandboxer/storage/pod-disks.ts";

function fakeVm() {
  const calls: string[] = [];
  return {
    calls,
    hotplugDisk: async (d: DiskSpec) => {
      calls.push(`plug ${d.id} ${d.path} ${d.readOnly ? "ro" : "rw"}`);
      return { id: d.id, serial: d.id };
    },
    removeDevice: async (id: string) => {
      calls.push(`remove ${id}`);
      return "removed" as const;
    },
  };
}

test("one device for two containers is one disk in the VM, removed with its last user", async () => {
  const vm = fakeVm();
  const disks = new PodDisks(vm);
  const a = await disks.hotplugDisk({ id: "kdA", path: "/dev/loop3", readOnly: false });
  const b = await disks.hotplugDisk({ id: "kdB", path: "/dev/loop3", readOnly: true });
  assert.deepEqual([a.serial, b.serial], ["kdA", "kdA"], "the second container gets the first one's disk");
  const other = await disks.hotplugDisk({ id: "kdC", path: "/var/lib/blockfile/9", readOnly: false });
  assert.equal(other.serial, "kdC");
  assert.equal(await disks.removeDevice("kdA"), "removed");
  assert.deepEqual(vm.calls, ["plug kdA /dev/loop3 rw", "plug kdC /var/lib/blockfile/9 rw"], "still in use: kept");
  await disks.removeDevice("kdA");
  assert.equal(vm.calls.at(-1), "remove kdA", "gone with its last user");
  // Plugged again afresh afterwards.
  await disks.hotplugDisk({ id: "kdD", path: "/dev/loop3", readOnly: false });
  assert.equal(vm.calls.at(-1), "plug kdD /dev/loop3 rw");
});

test("a device in the VM read-only is not handed out writable; an unknown serial (an earlier daemon's) passes through", async () => {
  const vm = fakeVm();
  const disks = new PodDisks(vm);
  await disks.hotplugDisk({ id: "kdA", path: "/dev/loop3", readOnly: true });
  await assert.rejects(
    disks.hotplugDisk({ id: "kdB", path: "/dev/loop3", readOnly: false }),
    /\/dev\/loop3 is already in the VM read-only for another container of this pod/,
  );
  await disks.removeDevice("kdOld");
  assert.deepEqual(vm.calls, ["plug kdA /dev/loop3 ro", "remove kdOld"]);
  await disks.removeDevice("kdA");
  assert.equal(vm.calls.at(-1), "remove kdA", "the refused request took no share of it");
});
