import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { installVmm, layout, uninstallVmm, withInterpreter } from "../../../installers/install-vmm.ts";

let tmp: string;
let bin: string;
let dest: string;

/** Every file and directory under root with its mode, e.g. "var/lib/kuasar/config.toml 640". */
async function tree(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(path.join(root, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(path.join(root, r));
    out.push(`${r}${st.isDirectory() ? "/" : ""} ${(st.mode & 0o7777).toString(8)}`);
    if (st.isDirectory()) out.push(...(await tree(root, r)));
  }
  return out;
}

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "install-"));
  bin = path.join(tmp, "bin");
  dest = path.join(tmp, "root");
  await mkdir(bin);
  await mkdir(dest);
  for (const e of layout("qemu")) await writeFile(path.join(bin, e.src), `artifact ${e.src}\n`);
  // The real unit and sysconfig, so the installed unit can be verified by systemd.
  await copyFile("installers/systemd/kuasar-vmm.service", path.join(bin, "kuasar-vmm.service"));
  await copyFile("installers/sysconfig/kuasar-vmm", path.join(bin, "kuasar-vmm.sysconfig"));
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test("install-vmm lays out Kuasar's paths and modes; uninstall removes exactly that", async () => {
  await mkdir(path.join(dest, "etc"), { mode: 0o755 });
  await writeFile(path.join(dest, "etc/untouched"), "operator's file");
  await installVmm({ binDir: bin, destDir: dest, hypervisor: "qemu" });
  assert.deepEqual(await tree(dest), [
    "etc/ 755",
    "etc/containerd/ 755",
    "etc/containerd/conf.d/ 755",
    "etc/containerd/conf.d/kuasar-vmm.toml 644",
    "etc/sysconfig/ 755",
    "etc/sysconfig/kuasar-vmm 644",
    "etc/untouched 644",
    "usr/ 755",
    "usr/lib/ 755",
    "usr/lib/systemd/ 755",
    "usr/lib/systemd/system/ 755",
    "usr/lib/systemd/system/kuasar-vmm.service 644",
    "usr/local/ 755",
    "usr/local/bin/ 755",
    "usr/local/bin/containerd-shim-kuasar-vmm-v1 555",
    "usr/local/bin/kuasar-ctl 550",
    "usr/local/bin/vmm-sandboxer 550",
    "usr/local/lib/ 755",
    "usr/local/lib/kuasar-vmm/ 755",
    "usr/local/lib/kuasar-vmm/node 555",
    "usr/local/lib/kuasar-vmm/ns.node 550",
    "usr/local/lib/kuasar-vmm/vsock.node 550",
    "var/ 755",
    "var/lib/ 755",
    "var/lib/kuasar/ 750",
    "var/lib/kuasar/.install-manifest.json 640",
    "var/lib/kuasar/config.toml 640",
    "var/lib/kuasar/kuasar.img 640",
    "var/lib/kuasar/kuasar.img.manifest.json 640",
    "var/lib/kuasar/kuasar.initrd 640",
    "var/lib/kuasar/kuasar.initrd.manifest.json 640",
    "var/lib/kuasar/vmlinux.bin 640",
    "var/lib/kuasar/vmlinux.manifest.json 640",
  ]);
  assert.match(
    await readFile(path.join(dest, "etc/sysconfig/kuasar-vmm"), "utf8"),
    /--listen \/run\/vmm-sandboxer.sock --dir \/run\/kuasar-vmm/,
  );
  // The programs run on the runtime installed with them, whatever node the host has.
  for (const prog of ["vmm-sandboxer", "kuasar-ctl", "containerd-shim-kuasar-vmm-v1"]) {
    const text = await readFile(path.join(dest, "usr/local/bin", prog), "utf8");
    assert.equal(text, `#!/usr/local/lib/kuasar-vmm/node\nartifact ${prog}\n`);
  }
  assert.equal(withInterpreter("#!/usr/bin/env node\nmain();\n"), "#!/usr/local/lib/kuasar-vmm/node\nmain();\n");
  await uninstallVmm({ destDir: dest });
  assert.deepEqual(await tree(dest), ["etc/ 755", "etc/untouched 644"]);
});

test("re-install keeps an operator's edited config and is otherwise idempotent", async () => {
  await installVmm({ binDir: bin, destDir: dest, hypervisor: "qemu" });
  const before = await tree(dest);
  await writeFile(path.join(dest, "var/lib/kuasar/config.toml"), "# edited by the operator\n");
  await installVmm({ binDir: bin, destDir: dest, hypervisor: "qemu" });
  assert.deepEqual(await tree(dest), before);
  assert.equal(await readFile(path.join(dest, "var/lib/kuasar/config.toml"), "utf8"), "# edited by the operator\n");
  // Uninstall keeps the edited config (and so its directory) but removes everything else it wrote.
  await uninstallVmm({ destDir: dest });
  assert.deepEqual(await tree(dest), [
    "var/ 755",
    "var/lib/ 755",
    "var/lib/kuasar/ 750",
    "var/lib/kuasar/config.toml 640",
  ]);
});

test("a config.toml that was there before install is kept and survives uninstall", async () => {
  await mkdir(path.join(dest, "var/lib/kuasar"), { recursive: true });
  await writeFile(path.join(dest, "var/lib/kuasar/config.toml"), "# mine\n");
  await installVmm({ binDir: bin, destDir: dest, hypervisor: "qemu" });
  await uninstallVmm({ destDir: dest });
  assert.equal(await readFile(path.join(dest, "var/lib/kuasar/config.toml"), "utf8"), "# mine\n");
});

test("a missing artifact is named with what to run", async () => {
  await rm(path.join(bin, "vmlinux.bin"));
  await assert.rejects(
    installVmm({ binDir: bin, destDir: dest, hypervisor: "qemu" }),
    /vmlinux.bin is missing; build it first/,
  );
});

test("the installed unit passes systemd-analyze verify", async () => {
  await installVmm({ binDir: bin, destDir: dest, hypervisor: "qemu" });
  // verify --root resolves everything inside the root: give it the targets the unit names and /bin/kill.
  const units = path.join(dest, "usr/lib/systemd/system");
  for (const t of ["sysinit", "basic", "shutdown", "network", "multi-user", "containerd"]) {
    const name = t === "containerd" ? "containerd.service" : `${t}.target`;
    await writeFile(path.join(units, name), t === "containerd" ? "[Service]\nExecStart=/bin/true\n" : "[Unit]\n");
  }
  await mkdir(path.join(dest, "bin"));
  await copyFile("/usr/bin/kill", path.join(dest, "bin/kill"));
  await copyFile("/usr/bin/true", path.join(dest, "bin/true"));
  execFileSync("chmod", ["755", path.join(dest, "bin/kill"), path.join(dest, "bin/true")]);
  const out = execFileSync(
    "systemd-analyze",
    ["verify", `--root=${dest}`, "--recursive-errors=no", "/usr/lib/systemd/system/kuasar-vmm.service"],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  assert.equal(out.trim(), "");
});
