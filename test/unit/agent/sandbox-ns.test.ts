import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { execa } from "execa";
import { ContainerManager } from "../../../runtime/agent/containers.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { ExitMonitor } from "../../../runtime/agent/exit-monitor.ts";
import { Runc } from "../../../runtime/agent/runc.ts";
import { setupSandboxNamespaces, sysctlPath, teardownSandboxNamespaces } from "../../../runtime/agent/sandbox-ns.ts";
import { prepareBundle, sandboxNamespaces } from "../../../runtime/agent/spec.ts";
import * as h from "./harness.ts";

// The container part orphans processes through runc; init reaps them (see underInit).
if (await h.underInit(import.meta.url)) {
  test("sysctl keys map to /proc/sys paths; malformed ones are rejected", () => {
    assert.equal(sysctlPath("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
    assert.equal(sysctlPath("net/ipv4/conf/eth0.100/forwarding"), "/proc/sys/net/ipv4/conf/eth0.100/forwarding");
    for (const bad of ["../etc/passwd", "kernel..shmmax", "a b", "/kernel/x"]) {
      assert.throws(
        () => sysctlPath(bad),
        (e: unknown) => e instanceof TaskError && e.message.includes(bad),
      );
    }
  });

  test("more sysctls than one setup call applies are refused before anything is created", async () => {
    const many = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`net.ipv4.conf.eth${i}.forwarding`, "1"]));
    await assert.rejects(
      setupSandboxNamespaces({ dir: "/nonexistent/sandbox-ns", sysctls: many }),
      (e: unknown) => e instanceof TaskError && e.code === "InvalidArgument" && /257 pod sysctls/.test(e.message),
    );
  });

  await h.requireTools();
  await h.addonsReady();
  const s = await h.scratch("sandboxns");
  const nsDir = path.join(s.dir, "sandbox-ns");
  const exits = ExitMonitor.fromInit();
  after(async () => {
    exits.close();
    await teardownSandboxNamespaces(nsDir);
    await s.cleanup();
  });

  test("persistent ipc/uts namespaces carry the pod's hostname and ipc sysctls; containers join them", {
    timeout: 60_000,
  }, async () => {
    const hostShmmni = readFileSync("/proc/sys/kernel/shmmni", "utf8");
    const hostName = readFileSync("/proc/sys/kernel/hostname", "utf8");
    await setupSandboxNamespaces({ dir: nsDir, hostname: "pod-a", sysctls: { "kernel.shmmni": "123" } });
    assert.deepEqual(Object.keys(sandboxNamespaces(nsDir)).sort(), ["ipc", "uts"]);
    const inside = (cmd: string) =>
      execa("nsenter", [`--ipc=${nsDir}/ipc`, `--uts=${nsDir}/uts`, "sh", "-c", cmd]).then((r) => r.stdout);
    assert.equal(await inside("hostname; cat /proc/sys/kernel/shmmni"), "pod-a\n123");
    assert.equal(readFileSync("/proc/sys/kernel/shmmni", "utf8"), hostShmmni, "the host's value is untouched");
    assert.equal(readFileSync("/proc/sys/kernel/hostname", "utf8"), hostName);

    // Again: the existing namespaces are reused and the settings applied to them.
    await setupSandboxNamespaces({ dir: nsDir, hostname: "pod-b", sysctls: { "kernel.msgmax": "4096" } });
    assert.equal(await inside("hostname; cat /proc/sys/kernel/msgmax /proc/sys/kernel/shmmni"), "pod-b\n4096\n123");
    await assert.rejects(
      setupSandboxNamespaces({ dir: nsDir, sysctls: { "kernel.nosuchkey": "1" } }),
      (e: unknown) =>
        e instanceof TaskError && e.code === "InvalidArgument" && /kernel\.nosuchkey=1.*ENOENT/.test(e.message),
    );
    await assert.rejects(setupSandboxNamespaces({ dir: nsDir, hostname: "bad_name!" }), /bad_name!/);

    const rootfs = await h.busyboxRootfs(s.dir);
    const bundle = await h.writeBundle(s.dir, rootfs, "joiner", {
      args: ["sh", "-c", "hostname; cat /proc/sys/kernel/shmmni"],
      cgroupParent: s.cgroupParent,
      hostname: null,
    });
    const lsm = { apparmor: false, selinux: false };
    const m = new ContainerManager({
      runc: new Runc({ root: s.runcRoot, logDir: `${s.dir}/logs` }),
      exits,
      stateDir: `${s.dir}/state`,
      lsm,
      prepareBundle: (source, target) => prepareBundle(source, target, { sandboxNsDir: nsDir, lsm }),
    });
    await m.create("joiner", bundle, { stdout: "o" });
    const out = h.collect(m.process("joiner").stdio.stdout);
    await m.start("joiner");
    assert.equal((await m.wait("joiner")).exitStatus, 0);
    await out.ended;
    assert.equal(out.text(), "pod-b\n123\n");
    await m.delete("joiner");
  });
}
