import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { logger } from "../../runtime/log/log.ts";
import { PodSandboxState } from "../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { QmpClient } from "../../runtime/sandboxer/hypervisor/qmp.ts";
import { defaultEnv, recoverHypervisor } from "../../runtime/sandboxer/hypervisor/registry.ts";
import { type Env, startEnv, vmProcesses } from "../../testkit/containerd.ts";
import * as cri from "../../testkit/cri.ts";
import { containerConfig, QUICK, SLOW, until } from "../../testkit/cri.ts";

// Block storage through the unmodified containerd 2.1.9, as kubelet drives it: the kuasar-vmm runtime handler uses
// the blockfile snapshotter, so every container rootfs is an ext4 image file that is hot-plugged into the pod's VM
// as a virtio-blk disk, which only the guest mounts. QEMU runs under TCG here: generous deadlines.
let env: Env;
let watch: HostMounts;
const withLogs = (body: () => Promise<void>) => cri.withLogs(env, body);

/**
 * Every mount event in the host's mount namespace (findmnt --poll reads /proc/self/mountinfo on each change, so a
 * mount of milliseconds is seen too), with its source: an image file is mounted through a loop device.
 */
class HostMounts {
  private proc: ChildProcess;
  private out = "";
  readonly ready: Promise<void>;
  constructor() {
    this.proc = spawn(
      "findmnt",
      ["--poll", "--noheadings", "--raw", "--output", "ACTION,TARGET,SOURCE,FSTYPE,OPTIONS"],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    this.proc.stdout?.on("data", (d) => {
      this.out += d;
    });
    this.ready = new Promise((r) => setTimeout(r, 300));
  }
  /** A point in the event stream (findmnt is given a moment to report what happened before it). */
  async mark(): Promise<number> {
    await new Promise((r) => setTimeout(r, 300));
    return this.out.length;
  }
  /** Mount events since `from` whose source is a loop device or a blockfile snapshot. */
  ofImages(from = 0): string[] {
    return this.out
      .slice(from)
      .split("\n")
      .filter((l) => /^(mount|move|remount) /.test(l))
      .filter((l) => /\s\/dev\/loop\d+\s|blockfile/.test(l));
  }
  stop(): void {
    this.proc.kill();
  }
}

/**
 * containerd 2.1.9's CRI mounts a new container's snapshot read-only on the host at CreateContainer (a temporary
 * mount to read /etc/passwd and /etc/group of the image for the user and its groups), before any guest had the disk.
 * Those are the only image mounts allowed: containerd's, read-only, in its tmpmounts directory.
 */
function containerdTempMounts(events: string[]): string[] {
  const tmp = path.join(env.dir, "containerd/root/tmpmounts/");
  return events.filter((l) => {
    const [, target, , , options] = l.split(" ");
    return !(target?.startsWith(tmp) && options?.split(",").includes("ro"));
  });
}

const blockfileRoot = () => path.join(env.dir, "containerd/blockfile");

/** Host loop devices reading a file under the run's directory. */
function loopsOverRun(): string[] {
  return readdirSync("/sys/block")
    .filter((n) => n.startsWith("loop"))
    .filter((n) => {
      const f = `/sys/block/${n}/loop/backing_file`;
      return existsSync(f) && readFileSync(f, "utf8").startsWith(env.dir);
    });
}

/** Files under the blockfile snapshotter's root that the sandbox's QEMU holds open. */
const qemuOpenSnapshots = (sandboxDir: string) => qemuOpenFiles(sandboxDir, blockfileRoot());

/** Files under `under` that the sandbox's QEMU holds open. */
function qemuOpenFiles(sandboxDir: string, under: string): string[] {
  const qemu = vmProcesses(sandboxDir).find((p) => /qemu/.test(readlinkSync(`/proc/${p}/exe`)));
  assert.ok(qemu, "the pod's QEMU runs");
  return readdirSync(`/proc/${qemu}/fd`)
    .map((fd) => {
      try {
        return readlinkSync(`/proc/${qemu}/fd/${fd}`);
      } catch {
        return "";
      }
    })
    .filter((f) => f.startsWith(under));
}

const exec = async (containerId: string, script: string) => {
  const r = await env.runtime.execSync({ containerId, cmd: ["sh", "-c", script], timeout: 60n }, SLOW);
  assert.equal(r.exitCode, 0, `${script}: ${Buffer.from(r.stderr).toString()}`);
  return Buffer.from(r.stdout).toString();
};

/** The serials of the guest's disks, as a container sees them in the guest's sysfs. */
const guestSerials = async (containerId: string) =>
  (await exec(containerId, "for f in /sys/block/*/serial; do cat $f; echo; done"))
    .split(/\s+/)
    .filter((s) => s.startsWith("kd"))
    .sort();

/** A fresh daemon (it recovers the pod); containerd's connection to its socket backs off meanwhile, then returns. */
async function restartDaemon(podSandboxId: string): Promise<void> {
  await env.restartDaemon();
  await until("containerd to reach the restarted daemon", 60_000, async () => {
    const r = await env.runtime.podSandboxStatus({ podSandboxId }, QUICK).catch(() => undefined);
    return r?.status?.state === PodSandboxState.SANDBOX_READY ? true : undefined;
  });
}

before(async () => {
  env = await startEnv({ snapshotter: "blockfile" });
  watch = new HostMounts();
  await watch.ready;
});

after(async () => {
  watch?.stop();
  await env?.teardown();
});

test(
  "a blockfile rootfs is a disk only the guest mounts; removal takes it out of the guest and QEMU",
  { timeout: 600_000 },
  () =>
    withLogs(async () => {
      const pod = await cri.runPod(env, "e2e-blockfile");
      const dir = env.sandboxDir(pod.id);
      const create = async (name: string) => {
        const { containerId } = await env.runtime.createContainer(
          { podSandboxId: pod.id, config: containerConfig(name, "exec sleep 3600"), sandboxConfig: pod.config },
          SLOW,
        );
        return containerId;
      };
      const app = await create("app");
      const sidecar = await create("sidecar");
      assert.deepEqual(containerdTempMounts(watch.ofImages()), [], "only containerd's read-only look at a new image");
      // From here on, the guest owns the images: nothing on the host mounts them, teardown included.
      const since = await watch.mark();
      for (const containerId of [app, sidecar]) await env.runtime.startContainer({ containerId }, SLOW);

      // The container's / is the disk, ext4, mounted in the guest; its serial is the one the host recorded.
      const root = (await exec(app, "cat /proc/self/mountinfo")).split("\n").find((l) => l.split(" ")[4] === "/");
      assert.match(root ?? "", / - ext4 \/dev\/vd[a-z]+ rw/, `the rootfs: ${root}`);
      const dev = root?.split(" ")[2];
      const serial = (await exec(app, `cat /sys/dev/block/${dev}/serial`)).trim();
      const rec = JSON.parse(await readFile(path.join(dir, "containers", `${app}.json`), "utf8"));
      assert.deepEqual(
        rec.bundle.disks.map((d: { serial: string; guest: { kind: string } }) => [d.serial, d.guest.kind]),
        [[serial, "rootfs"]],
      );
      assert.equal(await exec(app, "echo written > /in-rootfs && cat /in-rootfs"), "written\n");
      assert.deepEqual(
        await guestSerials(sidecar),
        [serial, ...(await guestSerials(app)).filter((s) => s !== serial)].sort(),
      );
      const held = qemuOpenSnapshots(dir);
      assert.equal(held.length, 2, `QEMU holds both containers' images: ${held}`);
      assert.deepEqual(watch.ofImages(since), [], "the host never mounted an image");
      assert.deepEqual(loopsOverRun(), [], "no host loop device reads an image");

      await env.runtime.stopContainer({ containerId: app, timeout: 2n }, SLOW);
      await env.runtime.removeContainer({ containerId: app }, SLOW);
      assert.equal(existsSync(path.join(dir, "containers", `${app}.json`)), false, "its record is gone");
      assert.equal(qemuOpenSnapshots(dir).length, 1, "QEMU let go of the removed container's image");
      assert.ok(!(await guestSerials(sidecar)).includes(serial), "the disk is gone from the guest");
      assert.doesNotMatch(env.daemon.log(), /the guest kept disk|did not release/);

      // QEMU's own view: the daemon holds the one QMP connection, so it is killed (as in a crash) while QEMU is asked.
      env.daemon.proc.kill("SIGKILL");
      await until("QMP to be free", 10_000, async () =>
        env.daemon.proc.exitCode !== null || env.daemon.proc.signalCode ? true : undefined,
      );
      const qmp = await QmpClient.connect(path.join(dir, "qmp.sock"), 10_000);
      try {
        const blocks = JSON.stringify(await qmp.execute("query-named-block-nodes", { flat: true }));
        assert.doesNotMatch(blocks, new RegExp(`(drive|file|null)-${serial}`), "no block node of the disk is left");
        assert.match(blocks, /snapshots\/\d+/, "the sidecar's disk is still there");
        const pci = JSON.stringify(await qmp.execute("query-pci"));
        assert.ok(!pci.includes(`"qdev_id":"${serial}"`), "no PCI device of the disk is left");
      } finally {
        qmp.close();
      }
      await restartDaemon(pod.id);
      // The restarted daemon stops the sidecar containerd now records as exited, and unplugs its disk.
      await until("the sidecar's disk to be unplugged", 60_000, async () =>
        qemuOpenSnapshots(dir).length === 0 ? true : undefined,
      );
      // containerd records it exited once it has noticed its dropped task connection, which may come later.
      await cri.untilExited(env, sidecar, "CRI to record the sidecar exited");
      await until("the sidecar to be removable", 60_000, async () =>
        env.runtime.removeContainer({ containerId: sidecar }, SLOW).then(
          () => true,
          () => undefined,
        ),
      );
      await cri.removePod(env, pod.id);
      assert.deepEqual(watch.ofImages(since), [], "the host never mounted an image, teardown included");
      assert.deepEqual(loopsOverRun(), []);
      assert.deepEqual(
        readdirSync(path.join(blockfileRoot(), "snapshots")).filter((f) => f.startsWith("rm-")),
        [],
        "containerd removed the containers' images",
      );
    }),
);

test("a raw block volume written in the container is readable on the host afterwards", { timeout: 600_000 }, () =>
  withLogs(async () => {
    const file = path.join(env.dir, "volume.img");
    execFileSync("truncate", ["-s", "16M", file]);
    const loop = execFileSync("losetup", ["-f", "--show", file], { encoding: "utf8" }).trim();
    try {
      const pod = await cri.runPod(env, "e2e-rawblock");
      const message = "written in the VM through /dev/xvdb\n";
      const { containerId } = await env.runtime.createContainer(
        {
          podSandboxId: pod.id,
          config: containerConfig(
            "writer",
            `ls -l /dev/xvdb; printf '${message.replace("\n", "\\n")}' > /dev/xvdb && echo done`,
            {
              devices: [{ containerPath: "/dev/xvdb", hostPath: loop, permissions: "rwm" }],
            },
          ),
          sandboxConfig: pod.config,
        },
        SLOW,
      );
      const since = await watch.mark();
      await env.runtime.startContainer({ containerId }, SLOW);
      const lines = await cri.logLines(path.join(pod.config.logDirectory ?? "", "writer.log"), /done/, 60_000);
      // The guest disk's number (virtio-blk's major), not the host loop device's (7).
      const node = /^b\S+ .* (\d+),\s+\d+ .* \/dev\/xvdb$/.exec(lines[0] ?? "");
      assert.ok(node, `a block device node at the requested path: ${lines[0]}`);
      assert.notEqual(node[1], "7", "the node is the guest's disk, not the host's device number");
      assert.equal(lines.at(-1), "done");
      await cri.untilExited(env, containerId, "the writer to exit", 30_000);
      await env.runtime.removeContainer({ containerId }, SLOW);
      assert.doesNotMatch(env.daemon.log(), /the guest kept disk|did not release/);
      const head = (p: string) => readFileSync(p).subarray(0, message.length).toString();
      assert.equal(head(loop), message, "the host reads what the container wrote");
      await cri.removePod(env, pod.id);
      assert.deepEqual(watch.ofImages(since), [], "neither the volume nor the rootfs was mounted on the host");
    } finally {
      execFileSync("blockdev", ["--flushbufs", loop]);
      execFileSync("losetup", ["-d", loop]);
    }
    assert.equal(readFileSync(file).subarray(0, 8).toString(), "written ", "and so does the file behind it");
  }),
);

test(
  "one raw block volume in two containers of a pod is one disk, kept until its last user is removed",
  { timeout: 600_000 },
  () =>
    withLogs(async () => {
      const file = path.join(env.dir, "shared-volume.img");
      execFileSync("truncate", ["-s", "16M", file]);
      const loop = execFileSync("losetup", ["-f", "--show", file], { encoding: "utf8" }).trim();
      try {
        const pod = await cri.runPod(env, "e2e-sharedblock");
        const ids: string[] = [];
        for (const name of ["first", "second"]) {
          const { containerId } = await env.runtime.createContainer(
            {
              podSandboxId: pod.id,
              config: containerConfig(name, "exec sleep 3600", {
                devices: [{ containerPath: "/dev/xvdc", hostPath: loop, permissions: "rwm" }],
              }),
              sandboxConfig: pod.config,
            },
            SLOW,
          );
          await env.runtime.startContainer({ containerId }, SLOW);
          ids.push(containerId);
        }
        const [first, second] = ids as [string, string];
        const sh = async (id: string, script: string) => {
          const r = await env.runtime.execSync({ containerId: id, cmd: ["sh", "-c", script], timeout: 60n }, SLOW);
          assert.equal(r.exitCode, 0, `${script}: ${Buffer.from(r.stderr).toString()}`);
          return Buffer.from(r.stdout).toString();
        };
        await sh(first, "printf 'shared-by-first' > /dev/xvdc && sync");
        assert.equal(await sh(second, "head -c 15 /dev/xvdc"), "shared-by-first", "the second sees the same disk");
        await env.runtime.stopContainer({ containerId: first, timeout: 1n }, SLOW);
        await env.runtime.removeContainer({ containerId: first }, SLOW);
        await sh(second, "printf 'then-the-second' > /dev/xvdc && sync");
        assert.equal(
          await sh(second, "head -c 15 /dev/xvdc"),
          "then-the-second",
          "still attached after the first left",
        );
        await env.runtime.stopContainer({ containerId: second, timeout: 1n }, SLOW);
        await env.runtime.removeContainer({ containerId: second }, SLOW);
        assert.doesNotMatch(env.daemon.log(), /the guest kept disk|did not release|hot-plug of .* failed/);
        assert.equal(readFileSync(loop).subarray(0, 15).toString(), "then-the-second");
        await cri.removePod(env, pod.id);
      } finally {
        execFileSync("losetup", ["-d", loop]);
      }
    }),
);

// Attack: a guest that never lets go of a disk (here: frozen, so it never acts on the unplug) must not keep the host
// file open in QEMU. The daemon's driver is run against the pod's real QEMU while the daemon is down.
test(
  "a guest that never releases a disk has it cut off: QEMU closes the host file after the bound",
  { timeout: 300_000 },
  () =>
    withLogs(async () => {
      const pod = await cri.runPod(env, "e2e-keeps-disk");
      const dir = env.sandboxDir(pod.id);
      const file = path.join(env.dir, "kept.img");
      execFileSync("truncate", ["-s", "8M", file]);
      env.daemon.proc.kill("SIGKILL");
      await until("the daemon to exit", 10_000, async () => (env.daemon.proc.signalCode ? true : undefined));
      const qmp = (command: string) =>
        QmpClient.connect(path.join(dir, "qmp.sock"), 10_000).then(async (c) => {
          await c.execute(command).finally(() => c.close());
        });
      await qmp("stop");
      const rec = JSON.parse(await readFile(path.join(dir, "sandbox.json"), "utf8"));
      const vm = await recoverHypervisor(rec.runtime.vm, defaultEnv(logger("e2e-attack")));
      try {
        await vm.hotplugDisk({ id: "kdKept", path: file, readOnly: false });
        assert.deepEqual(qemuOpenFiles(dir, file), [file], "QEMU opened the disk's file");
        const t = Date.now();
        assert.equal(await vm.removeDevice("kdKept", { timeoutMs: 3000 }), "cut-off");
        assert.ok(Date.now() - t >= 3000, "the guest was given its time");
        assert.deepEqual(qemuOpenFiles(dir, file), [], "QEMU no longer holds the host file");
      } finally {
        vm.detach();
        await qmp("cont");
      }
      await restartDaemon(pod.id);
      await cri.removePod(env, pod.id);
    }),
);
