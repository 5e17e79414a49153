import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { lchown, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ConfigError, loadConfig, parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import {
  HelperUids,
  hostIdCollisions,
  killAllOf,
  processesOf,
  processIds,
} from "../../../../runtime/sandboxer/hypervisor/helper-uid.ts";
import { commandOf, SETPRIV } from "../../../../runtime/sandboxer/hypervisor/process.ts";
import { publishSocket } from "../../../../runtime/sandboxer/hypervisor/vm.ts";

/** Uids of this file's own: nothing else on a test host runs under them. */
const U = 2_100_100_000;
const RANGE = { base: U, count: 8 };
const noProcesses = async () => new Map<number, number[]>();

let tmp: string;
const children: ChildProcess[] = [];
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "helper-uid-"));
});
after(async () => {
  for (const c of children) c.kill("SIGKILL");
  await rm(tmp, { recursive: true, force: true });
});

/** `sh -c script` under uid (gid the same), as a helper would run. */
async function runAs(uid: number, script: string): Promise<ChildProcess> {
  const child = spawn(SETPRIV, [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "--", "sh", "-c", script], {
    stdio: "ignore",
  });
  children.push(child);
  await once(child, "spawn");
  return child;
}

async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await check()); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(await check());
}

describe("the helper's command line", () => {
  const helper = { name: "vhost-device-vsock", path: "/usr/bin/vhost-device-vsock", args: ["--guest-cid", "3"] };
  const drop = [
    ...[SETPRIV, `--reuid=${U}`, `--regid=${U}`, "--clear-groups"],
    ...["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"],
  ];

  test("setpriv drops to the sandbox's uid right before the helper, after the cgroup join (which needs root)", () => {
    const [file, args] = commandOf({
      ...helper,
      logFile: "/x.log",
      user: { uid: U, gid: U },
      cgroupProcs: ["/sys/fs/cgroup/kuasar-vmm-sb1/cgroup.procs"],
      argv0: "/run/kuasar-vmm/sb1/vsock/vhost-device-vsock",
    });
    assert.equal(file, "/bin/sh");
    assert.deepEqual(args.slice(2), [
      "sh",
      "/sys/fs/cgroup/kuasar-vmm-sb1/cgroup.procs",
      "--",
      ...drop,
      // Last, as the helper's uid: the program runs with the sandbox directory as its argv[0].
      ...["/bin/bash", "-c", 'exec -a "$0" "$@"', "/run/kuasar-vmm/sb1/vsock/vhost-device-vsock"],
      "/usr/bin/vhost-device-vsock",
      "--guest-cid",
      "3",
    ]);
  });

  test("without a cgroup setpriv is the program; a netns is entered before the drop; no user, no setpriv", () => {
    const user = { uid: U, gid: U };
    assert.deepEqual(commandOf({ ...helper, logFile: "/x.log", user }), [
      SETPRIV,
      [...drop.slice(1), helper.path, ...helper.args],
    ]);
    assert.deepEqual(commandOf({ ...helper, logFile: "/x.log", user, netnsPath: "/var/run/netns/p" }), [
      "nsenter",
      ["--net=/var/run/netns/p", "--", ...drop, helper.path, ...helper.args],
    ]);
    assert.deepEqual(commandOf({ ...helper, logFile: "/x.log" }), [helper.path, helper.args]);
  });
});

describe("sandbox.helper_uid_base and helper_uid_count", () => {
  const qemu = (toml: string) => parseConfig(`${toml}\n[hypervisor]\ntype = "qemu"\n`, "test.toml");

  test("defaults: helpers under their own uids from 2000000000; 0 runs them as root", () => {
    const { sandbox } = qemu("").config;
    assert.deepEqual([sandbox.helper_uid_base, sandbox.helper_uid_count], [2_000_000_000, 65536]);
    assert.equal(qemu("[sandbox]\nhelper_uid_base = 0").config.sandbox.helper_uid_base, 0);
  });

  test("a range among the host's own ids or past 2^31-1 is a configuration error naming the key", () => {
    assert.throws(
      () => qemu("[sandbox]\nhelper_uid_base = 1000"),
      (e: Error) => e instanceof ConfigError && /sandbox\.helper_uid_base = 1000 is below 65536/.test(e.message),
    );
    assert.throws(
      () => qemu("[sandbox]\nhelper_uid_base = 2147480000\nhelper_uid_count = 10000"),
      /sandbox\.helper_uid_base = 2147480000 with helper_uid_count = 10000 reaches uid 2147489999, past 2147483647/,
    );
    assert.throws(() => qemu("[sandbox]\nhelper_uid_count = 0"), /sandbox\.helper_uid_count: out of range/);
  });

  test("users, groups and subordinate ranges of the host inside the range are found", async () => {
    const etc = path.join(tmp, "etc-taken");
    await mkdir(etc);
    await writeFile(
      path.join(etc, "passwd"),
      `root:x:0:0:root:/root:/bin/sh\nalice:x:${U + 2}:100::/home/alice:/bin/sh\nbob:x:1000:${U + 3}::/:/bin/sh\n`,
    );
    await writeFile(path.join(etc, "group"), `root:x:0:\nvms:x:${U + 7}:\nlater:x:${U + 8}:\n`);
    await writeFile(path.join(etc, "subuid"), `carol:${U - 100}:101\ndave:${U + 8}:65536\n`);
    assert.deepEqual(await hostIdCollisions(RANGE, etc), [
      `uid ${U + 2} is user alice (${etc}/passwd)`,
      `gid ${U + 3} is user bob's group (${etc}/passwd)`,
      `gid ${U + 7} is group vms (${etc}/group)`,
      `carol's subordinate ids ${U - 100}-${U} overlap it (${etc}/subuid)`,
    ]);
    assert.deepEqual(await hostIdCollisions({ base: U + 70_000, count: 8 }, etc), []);

    // The daemon refuses to start with it (loadConfig), and a start refuses it (allocate).
    const file = path.join(tmp, "taken.toml");
    await writeFile(file, `[sandbox]\nhelper_uid_base = ${U}\nhelper_uid_count = 8\n[hypervisor]\ntype = "qemu"\n`);
    await assert.rejects(
      loadConfig(file, etc),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message.includes(`sandbox.helper_uid_base = ${U} with helper_uid_count = 8`) &&
        e.message.includes("uid 2100100002 is user alice") &&
        e.message.includes("set helper_uid_base = 0"),
    );
    assert.equal((await loadConfig(file, path.join(tmp, "no-etc"))).config.sandbox.helper_uid_base, U);
    await assert.rejects(new HelperUids(etc, noProcesses).allocate("sb1", RANGE), /sandbox sb1: .*user alice/);
  });
});

describe("one uid per running sandbox", () => {
  const etc = () => path.join(tmp, "no-etc");

  test("concurrent starts get distinct uids until the range is spent; release makes one free again", async () => {
    const pool = new HelperUids(etc(), noProcesses);
    const uids = await Promise.all(Array.from({ length: RANGE.count }, (_, i) => pool.allocate(`sb${i}`, RANGE)));
    assert.equal(new Set(uids).size, RANGE.count);
    for (const u of uids) assert.ok(u >= U && u < U + RANGE.count);
    await assert.rejects(pool.allocate("one-more", RANGE), /every helper uid .* raise sandbox\.helper_uid_count/);
    pool.release(uids[3]!, "sb3");
    assert.equal(await pool.allocate("one-more", RANGE), uids[3]);
  });

  test("a recovered sandbox holds its recorded uid; another sandbox cannot claim it, nor release it", () => {
    const pool = new HelperUids(etc(), noProcesses);
    pool.hold(U, "sb1");
    pool.hold(U, "sb1");
    assert.throws(() => pool.hold(U, "sb2"), /sandbox sb2: its helper uid 2100100000 is held by sandbox sb1/);
    pool.release(U, "sb2");
    assert.equal(pool.holder(U), "sb1");
    pool.release(U, "sb1");
    assert.equal(pool.holder(U), undefined);
  });

  test("a uid some process still runs under (a leftover of a sandbox that is gone) is never handed out", async () => {
    const leftover = U + 4;
    await runAs(leftover, "exec sleep 300");
    await until(async () => (await processesOf(leftover)).length === 1);
    const pool = new HelperUids(etc(), processIds);
    await assert.rejects(pool.allocate("sb1", { base: leftover, count: 1 }), /every helper uid 2100100004-2100100004/);
    assert.equal(await pool.allocate("sb1", { base: leftover, count: 2 }), leftover + 1);
  });

  test("killAllOf ends every process of a helper uid, what it forked included; never a host uid", async () => {
    const uid = U + 5;
    await runAs(uid, "sleep 300 & sleep 300 & exec sleep 300");
    await until(async () => (await processesOf(uid)).length === 3);
    assert.deepEqual(await killAllOf(uid), []);
    assert.deepEqual(await processesOf(uid), []);
    await assert.rejects(killAllOf(0), /refusing to kill every process of uid 0/);
    await assert.rejects(killAllOf(1000), /not a helper uid/);
  });
});

describe("publishing a helper's socket under a root-owned name", () => {
  const listen = async (file: string, uid: number) => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(file, r));
    server.unref();
    await lchown(file, uid, uid);
  };

  test("the helper's socket gets a second, root-owned name", async () => {
    const [from, to] = [path.join(tmp, "own.sock"), path.join(tmp, "published.sock")];
    await listen(from, U);
    await publishSocket(from, to, U);
    const [a, b] = [await lstat(from), await lstat(to)];
    assert.ok(b.isSocket());
    assert.deepEqual([b.ino, b.uid, b.nlink], [a.ino, U, 2]);
  });

  test("a link, another uid's socket or a file where the helper's socket should be is refused", async () => {
    const rootOnly = path.join(tmp, "root-only.sock");
    await listen(rootOnly, 0);
    const cases: [string, () => Promise<void>, RegExp][] = [
      ["link", () => symlink(rootOnly, path.join(tmp, "link")), /it is a symbolic link of uid 0/],
      ["other", () => listen(path.join(tmp, "other"), U + 1), /it is a socket of uid 2100100001/],
      [
        "file",
        () => writeFile(path.join(tmp, "file"), "").then(() => lchown(path.join(tmp, "file"), U, U)),
        /another kind of file/,
      ],
    ];
    for (const [name, make, why] of cases) {
      await make();
      const to = path.join(tmp, `published-${name}`);
      await assert.rejects(publishSocket(path.join(tmp, name), to, U), why);
      assert.equal(existsSync(to), false, `${name}: nothing published`);
    }
  });
});
