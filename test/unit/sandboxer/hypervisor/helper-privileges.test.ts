import assert from "node:assert/strict";
import { type ChildProcess, execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { parseConfig } from "../../../../runtime/sandboxer/config/load.ts";
import { helperUids, processesOf } from "../../../../runtime/sandboxer/hypervisor/helper-uid.ts";
import { SETPRIV } from "../../../../runtime/sandboxer/hypervisor/process.ts";
import { createHypervisor } from "../../../../runtime/sandboxer/hypervisor/registry.ts";
import type { Hypervisor } from "../../../../runtime/sandboxer/hypervisor/vm-api.ts";
import { writeShareFiles } from "../../../../runtime/sandboxer/share-files.ts";
import { createShareDirs, shareLayout } from "../../../../runtime/sandboxer/storage/share.ts";
import { writeRecord } from "../../../../runtime/sandboxer/store.ts";
import { env } from "../fixtures/driver-env.ts";

// The vsock helper (the real vhost-device-vsock) started by the QEMU driver as the daemon starts it, around a QEMU
// stand-in, in a sandbox directory laid out as the daemon lays it out: what can the helper's uid reach, and what can
// another local user reach, once it runs? Both must reach nothing they could not reach before (the sandbox
// directory stays 0700 root); the helper only its own vsock/ directory.
const run = promisify(execFile);
const HELPER = "/usr/bin/vhost-device-vsock";
const FAKE_QEMU = path.join(import.meta.dirname, "../fixtures/fake-qemu.mjs");
const BASE = 2_100_000_000;
/** A local user with no relation to the sandbox. */
const OTHER = BASE - 1;

/** Files and directories the daemon, QEMU and the helper keep in <dir>/<id> (docs/architecture.md). */
const SANDBOX_ENTRIES = [
  ...["task.sock", "qmp.sock", "console.sock", "task.vsock", "vhost-vsock.sock"],
  ...["console.log", "vmm.log", "vhost-device-vsock.log", "sandbox.json", "vmm.pid"],
  ...["containers", "mounts", "mounts/hostname", "shared", "staging"],
];

/**
 * Runs as uid (gid the same, no groups) in cwd and reports, per path, "ok" when it could stat it and then list it
 * (directory), connect to it (socket) or open it for reading (anything else), else the error code.
 */
const PROBE = `
import fs from "node:fs";
import net from "node:net";
const reach = async (p) => {
  try {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) fs.readdirSync(p);
    else if (st.isSocket())
      await new Promise((ok, fail) => { const s = net.connect(p).on("connect", () => { s.destroy(); ok(); }).on("error", fail); });
    else fs.closeSync(fs.openSync(p, "r"));
    return "ok";
  } catch (e) { return e.code; }
};
const out = {};
for (const p of process.argv.slice(1)) out[p] = await reach(p);
console.log(JSON.stringify(out));
`;

async function probe(uid: number, cwd: string, paths: string[]): Promise<Record<string, string>> {
  const who = uid === 0 ? [] : [SETPRIV, `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "--"];
  const [file, ...args] = [...who, process.execPath, "--input-type=module", "-e", PROBE, ...paths];
  const { stdout } = await run(file!, args, { cwd });
  return JSON.parse(stdout) as Record<string, string>;
}

const statusOf = async (pid: number) =>
  Object.fromEntries(
    (await readFile(`/proc/${pid}/status`, "utf8"))
      .split("\n")
      .map((l) => l.split(":\t"))
      .filter((kv) => kv.length === 2)
      .map(([k, v]) => [k, v!.trim()]),
  );

let tmp: string;
let root: string;
let dir: string;
let vm: Hypervisor;
let helperPid: number;
let helperUid: number;
let qemuPid: number;
/** Where the daemon dials the agent. */
let agentUds: string;
const servers: net.Server[] = [];
let leftover: ChildProcess | undefined;

before(async () => {
  if (process.getuid?.() !== 0) assert.fail("this test starts helpers under other uids: run it as root");
  if (!existsSync(HELPER)) assert.fail(`${HELPER} is missing: install vhost-device-vsock (scripts/install-prereqs.sh)`);
  if (!existsSync(SETPRIV)) assert.fail(`${SETPRIV} is missing: apt-get install util-linux`);
  tmp = await mkdtemp(path.join(os.tmpdir(), "helper-priv-"));
  // Like /run: any user may pass through to the daemon's --dir, which main.ts makes 0750 root.
  await chmod(tmp, 0o755);
  root = path.join(tmp, "kuasar-vmm");
  await mkdir(root, { mode: 0o750 });
  // What SandboxManager.create and prepareShare (sandbox/resources.ts) make.
  dir = path.join(root, "pod1");
  await mkdir(dir, { mode: 0o700 });
  const share = shareLayout(dir);
  await createShareDirs(share);
  await writeShareFiles(share.mounts, undefined);
  await mkdir(path.join(dir, "containers"), { mode: 0o700 });
  await writeRecord(dir, { id: "pod1", state: "created" });
  const kernel = path.join(tmp, "vmlinux.bin");
  await writeFile(kernel, "");
  const config = parseConfig(
    `[sandbox]\nhelper_uid_base = ${BASE}\nhelper_uid_count = 1000\n` +
      `[hypervisor]\nqemu_path = "${FAKE_QEMU}"\nkernel_path = "${kernel}"\nimage_path = "${kernel}"\n` +
      `vsock_mode = "hybrid"\nvhost_user_vsock_path = "${HELPER}"\ndisable_nvdimm = true\n`,
    "test.toml",
  ).config;
  vm = createHypervisor(config, { id: "pod1", dir, shareDir: share.shared, netDevices: [] }, env);
  const started = await vm.start();
  qemuPid = started.pid;
  assert.equal(started.agentAddress.kind, "hvsock");
  if (started.agentAddress.kind === "hvsock") agentUds = started.agentAddress.udsPath;
  const state = vm.persistState();
  helperPid = state.helpers.find((h) => h.name === "vhost-device-vsock")!.pid;
  helperUid = state.helperUid!;
  // What serve (sandbox/serve.ts) then adds: the task API socket containerd dials.
  const task = net.createServer();
  servers.push(task);
  await new Promise<void>((r) => task.listen(path.join(dir, "task.sock"), r));
});

after(async () => {
  await vm?.stop(0).catch(() => undefined);
  leftover?.kill("SIGKILL");
  for (const s of servers) s.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("vhost-device-vsock under its own uid", () => {
  test("runs as the sandbox's uid: no groups, no capabilities, no_new_privs, in its own directory", async () => {
    assert.ok(helperUid >= BASE && helperUid < BASE + 1000, `uid ${helperUid} from the configured range`);
    const s = await statusOf(helperPid);
    assert.equal(s.Uid, [helperUid, helperUid, helperUid, helperUid].join("\t"), "real, effective, saved, fs uid");
    assert.equal(s.Gid, [helperUid, helperUid, helperUid, helperUid].join("\t"));
    assert.equal(s.Groups, "");
    for (const cap of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) assert.equal(s[cap], "0000000000000000", cap);
    assert.equal(s.NoNewPrivs, "1");
    const ps = await run("ps", ["-o", "uid=", "-p", String(helperPid)]);
    assert.equal(ps.stdout.trim(), String(helperUid));
    assert.equal(await readlink(`/proc/${helperPid}/cwd`), path.join(dir, "vsock"));
    // Its arguments are relative, its argv[0] still names the sandbox directory (ps, the leftover sweep).
    const cmdline = (await readFile(`/proc/${helperPid}/cmdline`, "utf8")).split("\0");
    assert.deepEqual(cmdline.slice(0, 2), [path.join(dir, "vsock/vhost-device-vsock"), "--guest-cid"]);
    assert.equal((await readFile(`/proc/${helperPid}/comm`, "utf8")).trim(), "vhost-device-vs");
    // The directories above it are as root made them.
    const [sb, st, own] = await Promise.all([stat(dir), stat(root), stat(path.join(dir, "vsock"))]);
    assert.deepEqual([sb.mode & 0o7777, sb.uid, sb.gid], [0o700, 0, 0], "<dir>/<id> stays 0700 root");
    assert.deepEqual([st.mode & 0o7777, st.uid], [0o750, 0], "<dir> stays 0750 root");
    assert.deepEqual([own.mode & 0o7777, own.uid, own.gid], [0o700, helperUid, helperUid], "vsock/ is the helper's");
    // QEMU and the daemon connect through root-owned names for the helper's sockets.
    for (const f of ["task.vsock", "vhost-vsock.sock"]) {
      const l = await lstat(path.join(dir, f));
      assert.ok(l.isSocket() && l.uid === helperUid && l.nlink === 2, `${f} is a hard link to the helper's socket`);
    }
  });

  test("the helper's uid reaches its own sockets and nothing else in or above the sandbox directory", async () => {
    const own = path.join(dir, "vsock");
    const outside = [root, dir, ...SANDBOX_ENTRIES.map((e) => path.join(dir, e))];
    const fromOwn = ["..", "../sandbox.json", "../task.sock", "../qmp.sock", "/proc/self/cwd/../sandbox.json"];
    const r = await probe(helperUid, own, [...outside, ...fromOwn, "task.vsock", "vhost-vsock.sock"]);
    for (const p of [...outside, ...fromOwn]) assert.equal(r[p], "EACCES", `${p} as the helper's uid`);
    assert.equal(r["task.vsock"], "ok");
    assert.equal(r["vhost-vsock.sock"], "ok");
    // The probe does see what is reachable: root reaches all of it.
    const asRoot = await probe(0, own, [...outside, "task.vsock"]);
    for (const p of [...outside, "task.vsock"]) assert.equal(asRoot[p], "ok", `${p} as root`);
  });

  test("another local user reaches nothing, the helper's directory included", async () => {
    const own = path.join(dir, "vsock");
    const paths = [dir, ...SANDBOX_ENTRIES.map((e) => path.join(dir, e)), own, path.join(own, "task.vsock")];
    const r = await probe(OTHER, "/", [root, ...paths, `/proc/${helperPid}/cwd/task.vsock`]);
    for (const p of [root, ...paths, `/proc/${helperPid}/cwd/task.vsock`]) assert.equal(r[p], "EACCES", p);
  });

  test("the helper's uid cannot signal QEMU or the daemon", async () => {
    const { stdout } = await run(SETPRIV, [
      ...[`--reuid=${helperUid}`, `--regid=${helperUid}`, "--clear-groups", "--"],
      ...[
        process.execPath,
        "-e",
        `for (const p of [${qemuPid}, ${process.pid}]) { try { process.kill(p, 0); console.log("ok"); } catch (e) { console.log(e.code); } }`,
      ],
    ]);
    assert.deepEqual(stdout.trim().split("\n"), ["EPERM", "EPERM"]);
  });

  test("a helper that swaps its task.vsock for a link to a root-only socket does not redirect the daemon", async () => {
    const decoy = path.join(tmp, "root-only.sock");
    let reached = 0;
    const server = net.createServer((c) => {
      reached++;
      c.destroy();
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(decoy, r));
    const own = path.join(dir, "vsock");
    await run(
      SETPRIV,
      [
        ...[`--reuid=${helperUid}`, `--regid=${helperUid}`, "--clear-groups", "--"],
        ...["/bin/sh", "-c", `rm task.vsock && ln -s ${decoy} task.vsock`],
      ],
      { cwd: own },
    );
    const dialled = (p: string) =>
      new Promise<void>((ok, fail) => {
        const s = net.connect(p).on("connect", () => {
          s.destroy();
          ok();
        });
        s.on("error", fail);
      });
    // The agent's address: the root-owned link still leads to the helper's listening socket.
    await dialled(agentUds);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(reached, 0, "the daemon's dial reached the decoy");
    // Root dialling the helper's own name would have followed the link: what the published name prevents.
    await dialled(path.join(own, "task.vsock"));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(reached, 1);
  });

  test("stop ends the helper and whatever it left running under its uid, removes its directory, frees the uid", async () => {
    // A taken-over helper forks something to outlive its sandbox (and wait for the next one to get its uid).
    leftover = execFile(SETPRIV, [
      ...[`--reuid=${helperUid}`, `--regid=${helperUid}`, "--clear-groups", "--"],
      ...["sleep", "300"],
    ]);
    const child = leftover;
    await new Promise((r) => child.once("spawn", r));
    await new Promise((r) => setTimeout(r, 100));
    assert.ok((await processesOf(helperUid)).length >= 2, "the helper and the leftover run under the uid");
    const exit = await vm.stop(1000);
    assert.equal(exit.exitStatus, 0);
    assert.deepEqual(await processesOf(helperUid), []);
    assert.equal(existsSync(path.join(dir, "vsock")), false);
    for (const f of ["task.vsock", "vhost-vsock.sock"]) assert.equal(existsSync(path.join(dir, f)), false, f);
    assert.equal(helperUids.holder(helperUid), undefined);
    assert.equal(vm.persistState().helperUid, undefined);
  });
});
