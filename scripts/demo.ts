import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createReadStream, existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { unaryClient } from "../runtime/grpc/service.ts";
import { Task } from "../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Controller } from "../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { TtrpcClient } from "../runtime/ttrpc/index.ts";

// Plays containerd's part against a real vmm-sandboxer: the sandbox Controller over gRPC, then the task API at
// the address Start returns. (The end-to-end tests do the same through a real containerd.)
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = path.join(repo, "bin");
const phases: Array<[string, number]> = [];
const t0 = performance.now();
let last = t0;
const phase = (name: string) => {
  const now = performance.now();
  phases.push([name, now - last]);
  console.log(`  ✔ ${name} (${((now - last) / 1000).toFixed(2)} s)`);
  last = now;
};

async function busyboxBundle(dir: string, args: string[]): Promise<string> {
  const rootfs = path.join(dir, "rootfs");
  await mkdir(path.join(rootfs, "bin"), { recursive: true });
  for (const d of ["proc", "sys", "dev", "tmp", "etc"]) await mkdir(path.join(rootfs, d));
  await copyFile("/bin/busybox", path.join(rootfs, "bin/busybox"));
  for (const a of ["sh", "echo", "uname", "cat", "hostname", "sleep"])
    await symlink("busybox", path.join(rootfs, "bin", a));
  const spec = {
    ociVersion: "1.0.2",
    process: { args, env: ["PATH=/bin"], cwd: "/", user: { uid: 0, gid: 0 } },
    root: { path: rootfs },
    hostname: "demo",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"] },
    ],
    linux: { namespaces: [{ type: "pid" }, { type: "mount" }, { type: "uts" }], cgroupsPath: "/demo/c1" },
  };
  await writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

async function main(): Promise<void> {
  for (const f of ["vmm-sandboxer", "vmlinux.bin", "kuasar.img"]) {
    if (!existsSync(path.join(bin, f))) throw new Error(`bin/${f} is missing: run make all bin/vmm-sandboxer`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-demo-"));
  const config = path.join(dir, "config.toml");
  await writeFile(
    config,
    `[sandbox]\nlog_level = "info"\n\n[hypervisor]\nqemu_path = "/usr/bin/qemu-system-x86_64"\nvcpus = 1\nmemory_in_mb = 512\n` +
      `kernel_path = "${bin}/vmlinux.bin"\nimage_path = "${bin}/kuasar.img"\n`,
  );
  const sock = path.join(dir, "vmm-sandboxer.sock");
  console.log(`kuasar-vmm demo in ${dir}`);
  const daemon: ChildProcess = spawn(
    process.execPath,
    [path.join(bin, "vmm-sandboxer"), "--config", config, "--dir", path.join(dir, "state"), "--listen", sock],
    {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, KUASAR_VSOCK_ADDON: path.join(bin, "vsock.node") },
    },
  );
  try {
    for (let i = 0; !existsSync(sock); i++) {
      if (i > 100) throw new Error("vmm-sandboxer did not create its socket within 10 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    phase("vmm-sandboxer started");
    const { client, close } = unaryClient(Controller, `unix://${sock}`);
    const podConfig = create(PodSandboxConfigSchema, {
      hostname: "demo-pod",
      metadata: { name: "demo", namespace: "default", uid: "demo-uid" },
    });
    const id = "demo-pod";
    await client.create({
      sandboxId: id,
      options: { typeUrl: "runtime.v1.PodSandboxConfig", value: toBinary(PodSandboxConfigSchema, podConfig) },
    });
    phase("sandbox created");
    const started = await client.start({ sandboxId: id });
    phase(`VM booted and agent ready (QEMU pid ${started.pid}, task API ${started.address})`);

    const taskSock = started.address.replace(/^ttrpc\+unix:\/\//, "");
    const conn = net.connect(taskSock);
    await new Promise((r) => conn.once("connect", r));
    const task = new TtrpcClient(conn).service(Task);
    const bundle = await busyboxBundle(path.join(dir, "bundle"), [
      "sh",
      "-c",
      'echo "hello from a container in a VM: kernel $(uname -r), hostname $(hostname)"',
    ]);
    const stdout = path.join(dir, "stdout");
    execFileSync("mkfifo", [stdout]);
    let output = "";
    const reading = new Promise<void>((resolve) =>
      createReadStream(stdout)
        .on("data", (d) => {
          output += d.toString();
        })
        .on("end", resolve),
    );
    const meta = { metadata: { "containerd-namespace-ttrpc": "default" } };
    await task.create({ id: "hello", bundle, stdout }, meta);
    phase("container created");
    const waiting = task.wait({ id: "hello" });
    await task.start({ id: "hello" });
    const exit = await waiting;
    await reading;
    phase(`container ran and exited with status ${exit.exitStatus}`);
    console.log(`\n  container output: ${output.trim()}\n`);
    await task.delete({ id: "hello" });
    await client.stop({ sandboxId: id, timeoutSecs: 5 });
    await client.shutdown({ sandboxId: id });
    phase("pod stopped and removed");
    close();
    conn.destroy();
    const total = (performance.now() - t0) / 1000;
    console.log("phase timings:");
    for (const [name, ms] of phases) console.log(`  ${(ms / 1000).toFixed(2).padStart(7)} s  ${name}`);
    console.log(`  ${total.toFixed(2).padStart(7)} s  total`);
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(`demo failed: ${err.message}`);
  process.exit(1);
});
