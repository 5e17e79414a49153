import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmod, copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { layout, withInterpreter } from "../../../installers/install-vmm.ts";
import { BLOCK_BEGIN, STATE_DIR } from "../../../installers/node-installer/containerd-config.ts";
import type { CommandResult, Runner } from "../../../installers/node-installer/host.ts";
import type { NodeApi } from "../../../installers/node-installer/kube.ts";
import { DROP_IN, main } from "../../../installers/node-installer/main.ts";
import { NODE_LABEL } from "../../../installers/node-installer/paths.ts";

const OPERATOR = `# the operator's containerd config
version = 3

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`;
const CONFIG = "etc/containerd/config.toml";

let tmp: string;
let bin: string;
let host: string;
let calls: string[];
let apiCalls: string[];
let labels: Record<string, string>;
let containerdVersion: string;
let out: string[];

const SC = "nsenter --target=1 --mount -- systemctl";
const VERSION_CALLS = (h: string) => [`nsenter --root=${h} --wd=${h} -- containerd --version`];

let failing: string | undefined;

const runner: Runner = async (argv): Promise<CommandResult> => {
  calls.push(argv.join(" "));
  const cmd = argv.slice(argv.indexOf("--") + 1).join(" ");
  if (cmd === failing) return { code: 1, stdout: "", stderr: `${cmd}: it failed` };
  if (cmd === "containerd --version") return { code: 0, stdout: `${containerdVersion}\n`, stderr: "" };
  if (cmd.startsWith("systemctl ")) return { code: 0, stdout: "", stderr: "" };
  return { code: 127, stdout: "", stderr: `${argv[0]}: not expected here` };
};

const api: NodeApi = {
  async labels(node) {
    apiCalls.push(`GET ${node}`);
    return { ...labels };
  },
  async setLabel(node, key, value) {
    apiCalls.push(`PATCH ${node} ${key}=${value}`);
    if (value === null) delete labels[key];
    else labels[key] = value;
  },
};

async function run(...argv: string[]): Promise<number> {
  return main(
    argv,
    { NODE_NAME: "node-1" },
    {
      run: runner,
      nodeApi: async () => api,
      log: (l) => out.push(l),
      error: (l) => out.push(l),
      readyFile: path.join(tmp, "ready"),
      waitForSignal: async () => {},
    },
  );
}
const install = () => run("install", "--host-root", host, "--bin-dir", bin);
const uninstall = () => run("uninstall", "--host-root", host, "--bin-dir", bin);

/** Every entry under root: path, mode and, for files, a digest of the bytes. */
async function snapshot(root: string, rel = ""): Promise<string[]> {
  const res: string[] = [];
  for (const name of (await readdir(path.join(root, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(path.join(root, r));
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isDirectory()) res.push(`${r}/ ${mode}`, ...(await snapshot(root, r)));
    else {
      const digest = createHash("sha256")
        .update(await readFile(path.join(root, r)))
        .digest("hex");
      res.push(`${r} ${mode} ${digest.slice(0, 12)}`);
    }
  }
  return res;
}

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "node-installer-"));
  bin = path.join(tmp, "bin");
  host = path.join(tmp, "host");
  await mkdir(bin);
  for (const e of layout("qemu")) await writeFile(path.join(bin, e.src), `artifact ${e.src}\n`);
  await copyFile("installers/containerd/kuasar-vmm.toml", path.join(bin, DROP_IN));
  await mkdir(path.join(host, "etc/containerd"), { recursive: true });
  await writeFile(path.join(host, CONFIG), OPERATOR, { mode: 0o640 });
  await chmod(path.join(host, CONFIG), 0o640);
  calls = [];
  apiCalls = [];
  labels = { "kubernetes.io/os": "linux" };
  containerdVersion = "containerd github.com/containerd/containerd/v2 2.1.9+unknown";
  failing = undefined;
  out = [];
});

afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test("install, re-install and uninstall: the exact host calls, and the config back byte for byte", async () => {
  const before = await snapshot(host);

  assert.equal(await install(), 0, out.join("\n"));
  assert.deepEqual(calls, [
    ...VERSION_CALLS(host),
    `${SC} daemon-reload`,
    `${SC} enable kuasar-vmm.service`,
    `${SC} restart kuasar-vmm.service`,
    `${SC} restart containerd.service`,
  ]);
  assert.deepEqual(apiCalls, ["GET node-1", `PATCH node-1 ${NODE_LABEL}=true`]);
  const merged = await readFile(path.join(host, CONFIG), "utf8");
  assert.ok(merged.startsWith(`${OPERATOR}\n${BLOCK_BEGIN}\n`), merged);
  assert.equal((await stat(path.join(host, CONFIG))).mode & 0o777, 0o640, "the config keeps its mode");
  assert.equal(await readFile(path.join(host, STATE_DIR, "containerd-config.toml.orig"), "utf8"), OPERATOR);
  for (const e of layout("qemu")) {
    const built = await readFile(path.join(bin, e.src), "utf8");
    // Node programs are installed to run on the private runtime laid out with them.
    const expected = e.script ? withInterpreter(built) : built;
    assert.equal(await readFile(path.join(host, e.dst), "utf8"), expected, e.dst);
  }
  const installed = await snapshot(host);

  calls = [];
  apiCalls = [];
  assert.equal(await install(), 0, out.join("\n"));
  assert.deepEqual(
    calls,
    [...VERSION_CALLS(host), `${SC} enable kuasar-vmm.service`, `${SC} start kuasar-vmm.service`],
    "a re-install restarts nothing",
  );
  assert.deepEqual(apiCalls, ["GET node-1"]);
  assert.deepEqual(await snapshot(host), installed, "a re-install changes no file");

  calls = [];
  apiCalls = [];
  assert.equal(await uninstall(), 0, out.join("\n"));
  assert.deepEqual(apiCalls, [`PATCH node-1 ${NODE_LABEL}=null`]);
  assert.deepEqual(calls, [
    `${SC} restart containerd.service`,
    `${SC} disable --now kuasar-vmm.service`,
    `${SC} daemon-reload`,
  ]);
  assert.equal(await readFile(path.join(host, CONFIG), "utf8"), OPERATOR);
  assert.deepEqual(await snapshot(host), before, "the host is as it was, config mode included");
  assert.deepEqual(labels, { "kubernetes.io/os": "linux" });

  calls = [];
  apiCalls = [];
  assert.equal(await uninstall(), 0);
  assert.deepEqual([calls, apiCalls], [[], []], "a second uninstall has nothing to do");
});

test("a config that does not parse is left untouched, and nothing is installed", async () => {
  const broken = 'version = 3\n[plugins."io.containerd.cri.v1.runtime"\n';
  await writeFile(path.join(host, CONFIG), broken);
  const before = await snapshot(host);
  assert.equal(await install(), 1);
  const msg = out.join("\n");
  assert.match(msg, /install failed: \/etc\/containerd\/config.toml is not valid TOML \(line 2/);
  assert.deepEqual(await snapshot(host), before);
  assert.deepEqual(calls, VERSION_CALLS(host), "no systemctl call");
  assert.deepEqual(apiCalls, []);
});

test("containerd older than 2.1 is refused before anything else", async () => {
  containerdVersion = "containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da";
  const before = await snapshot(host);
  assert.equal(await install(), 1);
  assert.match(out.join("\n"), /containerd on this node is 1\.7\.27; kuasar-vmm needs containerd 2\.1 or newer/);
  assert.deepEqual(calls, VERSION_CALLS(host).slice(0, 1));
  assert.deepEqual(await snapshot(host), before);
});

test("a key the installer did not write is refused by name", async () => {
  await writeFile(
    path.join(host, CONFIG),
    `${OPERATOR}\n[proxy_plugins.vmm]\n  type = "sandbox"\n  address = "/x.sock"\n`,
  );
  const before = await snapshot(host);
  assert.equal(await install(), 1);
  assert.match(out.join("\n"), /already defines proxy_plugins\.vmm, which the kuasar-vmm installer did not write/);
  assert.deepEqual(await snapshot(host), before);
});

test("without a containerd config: one is created, and uninstall removes it again", async () => {
  await rm(path.join(host, "etc"), { recursive: true });
  assert.equal(await install(), 0, out.join("\n"));
  const created = await readFile(path.join(host, CONFIG), "utf8");
  assert.match(created, /^\n# >>> kuasar-vmm[^\n]*\nversion = 3\n/);
  assert.equal((await stat(path.join(host, CONFIG))).mode & 0o777, 0o644);
  assert.equal(await uninstall(), 0, out.join("\n"));
  assert.deepEqual(await snapshot(host), [], "nothing left on an empty host root");
});

test("a node label someone else set is neither changed nor removed", async () => {
  labels[NODE_LABEL] = "true";
  assert.equal(await install(), 0, out.join("\n"));
  assert.deepEqual(apiCalls, ["GET node-1"]);
  assert.equal(await uninstall(), 0, out.join("\n"));
  assert.deepEqual(apiCalls, ["GET node-1"]);
  assert.equal(labels[NODE_LABEL], "true");
});

test("a new vmm-sandboxer restarts the service, not containerd", async () => {
  assert.equal(await install(), 0, out.join("\n"));
  await writeFile(path.join(bin, "vmm-sandboxer"), "artifact vmm-sandboxer, newer\n");
  calls = [];
  assert.equal(await install(), 0, out.join("\n"));
  assert.deepEqual(calls, [
    ...VERSION_CALLS(host),
    `${SC} enable kuasar-vmm.service`,
    `${SC} restart kuasar-vmm.service`,
  ]);
  assert.equal(
    await readFile(path.join(host, "usr/local/bin/vmm-sandboxer"), "utf8"),
    withInterpreter("artifact vmm-sandboxer, newer\n"),
  );
});

test("edits made to the config after the install are kept by uninstall, and so is the backup", async () => {
  assert.equal(await install(), 0, out.join("\n"));
  const merged = await readFile(path.join(host, CONFIG), "utf8");
  const edited = merged.replace('default_runtime_name = "runc"', 'default_runtime_name = "crun"');
  await writeFile(path.join(host, CONFIG), edited);
  assert.equal(await uninstall(), 0, out.join("\n"));
  assert.equal(
    await readFile(path.join(host, CONFIG), "utf8"),
    OPERATOR.replace('default_runtime_name = "runc"', 'default_runtime_name = "crun"'),
  );
  assert.match(out.join("\n"), /changed since the install and is kept as it is now/);
  assert.equal(await readFile(path.join(host, STATE_DIR, "containerd-config.toml.orig"), "utf8"), OPERATOR);
});

test("--stay marks the pod ready once the work is done; the ready mode reports it", async () => {
  assert.equal(await run("ready"), 1);
  assert.equal(await run("install", "--host-root", host, "--bin-dir", bin, "--stay"), 0, out.join("\n"));
  assert.equal(await run("ready"), 0);
  // A failing run clears the mark.
  await writeFile(path.join(host, CONFIG), "not toml");
  assert.equal(await run("install", "--host-root", host, "--bin-dir", bin, "--stay"), 1);
  assert.equal(await run("ready"), 1);
});

test("the mode and the host root come from the environment when no argument gives them", async () => {
  const code = await main(
    ["--bin-dir", bin],
    { KUASAR_INSTALLER_MODE: "uninstall", KUASAR_HOST_ROOT: host },
    {
      run: runner,
      nodeApi: async () => api,
      log: (l) => out.push(l),
      error: (l) => out.push(l),
      readyFile: path.join(tmp, "ready"),
      waitForSignal: async () => {},
    },
  );
  assert.equal(code, 0, out.join("\n"));
  assert.match(out.join("\n"), new RegExp(`nothing of the kuasar-vmm node installer on ${host}`));
  assert.equal(await run("bogus"), 2);
  assert.match(out.at(-1)!, /the mode must be install, uninstall or ready, got 'bogus'/);
});

test("a failed containerd restart is reported, and uninstall still gives the config back", async () => {
  const before = await snapshot(host);
  failing = "systemctl restart containerd.service";
  assert.equal(await install(), 1);
  assert.match(
    out.join("\n"),
    /'nsenter --target=1 --mount -- systemctl restart containerd.service' failed \(exit 1\): systemctl restart containerd.service: it failed; 'journalctl -u containerd.service' on the node says more/,
  );
  assert.deepEqual(apiCalls, [], "the node is not labelled when the install failed");
  failing = undefined;
  assert.equal(await uninstall(), 0, out.join("\n"));
  assert.deepEqual(await snapshot(host), before);
});
