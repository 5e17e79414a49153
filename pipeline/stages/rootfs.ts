import { existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startupDataFile } from "../../runtime/contract/startup-data.ts";
import { hashFile } from "../lib/hash.ts";
import type { BuildContext, KeyContext, Stage } from "../lib/stage.ts";
import { StageError } from "../lib/stage-error.ts";
import { writeNewc } from "../rootfs/cpio.ts";
import { isElf, lddClosure, readElf, systemLibDirs } from "../rootfs/elf.ts";
import { buildManifest, writeManifest } from "../rootfs/manifest.ts";
import { readSnapshotBlob } from "../rootfs/snapshot-blob.ts";
import { listTree, type TreeEntry } from "../rootfs/tree.ts";
import {
  AGENT_ADDON,
  AGENT_BUNDLE,
  AGENT_DIR,
  AGENT_INIT,
  elfFiles,
  INITRD_INIT,
  RootfsValidationError,
  validateRootfs,
} from "../rootfs/validate.ts";
import { pinnedNode } from "./node-runtime.ts";
import { AGENT_SNAPSHOT, AGENT_STARTUP_DATA, GUEST_NODE } from "./vmm-task.ts";

/** The one output: a sorted, gzip'd newc archive of the guest root. */
export const ROOTFS_ARCHIVE = "rootfs.cpio.gz";
export const ROOTFS_MANIFEST = "rootfs.manifest.json";

interface HostElf {
  host: string;
  guest: string;
  /** What installs it when it is missing. */
  install: string;
  /** all: strip --strip-all (no DWARF, no .symtab; .dynsym, which addons link against, stays). */
  strip: boolean;
}

/**
 * Binaries copied into the guest with their ldd closure; their digests (and their libraries') key the stage. node is
 * the pinned official build (node-runtime.ts), not the build host's. It carries DWARF and a full symbol table
 * (121 MiB before, 104 MiB after strip --strip-all): neither is mapped at run time, but an initrd holds every byte
 * in guest RAM.
 */
function hostElfs(repo: string): HostElf[] {
  return [
    { host: "/bin/busybox", guest: "bin/busybox", install: "apt-get install -y busybox-static", strip: false },
    { host: "/usr/sbin/runc", guest: "usr/sbin/runc", install: "apt-get install -y runc", strip: false },
    { host: pinnedNode(repo), guest: GUEST_NODE, install: "npm ci", strip: true },
  ];
}

/**
 * gzip level of the archive (= the initrd). Measured on this tree (108 MiB): -6 gives 42.2 MB in 8 s, -9 gives
 * 42.0 MB in 32 s; 0.7 % is not worth 24 s on every agent rebuild, and the guest unpacks both equally fast.
 */
const GZIP_LEVEL = "-6";

/** Directories the guest contract needs (mount points, runtime state), with their modes; other directories get 0755. */
const DIRS: Record<string, number> = {
  proc: 0o555,
  sys: 0o555,
  dev: 0o755,
  run: 0o755,
  "run/kuasar/state": 0o755,
  "run/sandbox-ns": 0o755,
  tmp: 0o1777,
  etc: 0o755,
  "var/log": 0o755,
  root: 0o700,
};

/** Files the task stage must produce; its other .js and .node files (more addons) go to /usr/lib/vmm-task too. */
const TASK_INIT = "init";
const TASK_REQUIRED = [TASK_INIT, path.basename(AGENT_BUNDLE), path.basename(AGENT_ADDON)];

async function hostElfDigests(ctx: KeyContext): Promise<Record<string, string>> {
  const elfs = hostElfs(ctx.repo);
  for (const e of elfs) {
    if (!existsSync(e.host)) throw new Error(`${e.host} is missing; install it with: ${e.install}`);
  }
  const closure = await lddClosure(elfs.map((e) => e.host));
  const digests: Record<string, string> = {};
  // Keyed by guest path for the binaries: the pinned node lives inside the checkout, wherever that is.
  for (const e of elfs) digests[e.guest] = await ctx.fileDigest(e.host);
  for (const c of closure) digests[c.path] = await ctx.fileDigest(c.path);
  return digests;
}

/**
 * The guest root filesystem, staged in a scratch directory, validated, and kept in the cache as ONE archive
 * (rootfs.cpio.gz) plus its manifest: cache lookups hash every output file, so one compact file keeps a no-op
 * build fast. The archive is a gzip'd sorted newc cpio, i.e. byte for byte the initrd; the image stage
 * unpacks it to feed mke2fs.
 */
export const rootfsStage: Stage = {
  name: "rootfs",
  title: "Guest root filesystem (busybox, runc, node, vmm-task)",
  deps: ["task"],
  async inputs(ctx) {
    // The loader is in the hashed closure, so ldd's own version adds nothing.
    const [hostElfs, staticFiles, helpers, stage, strip, gzip, unshare, setarch] = await Promise.all([
      hostElfDigests(ctx),
      ctx.treeDigest(path.join(ctx.repo, "rootfs")),
      ctx.treeDigest(path.join(ctx.repo, "pipeline/rootfs")),
      ctx.fileDigest(path.join(ctx.repo, "pipeline/stages/rootfs.ts")),
      ctx.tool("strip", "binutils"),
      ctx.tool("gzip", "gzip"),
      ctx.tool("unshare", "util-linux"),
      ctx.tool("setarch", "util-linux"),
    ]);
    return {
      sourceDateEpoch: ctx.options.sourceDateEpoch,
      arch: process.arch,
      hostElfs,
      staticFiles,
      code: { helpers, stage },
      tools: { strip, gzip, unshare, setarch },
    };
  },
  async build(ctx) {
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-rootfs-"));
    try {
      const root = path.join(scratch, "root");
      await stageTree(ctx, root);
      await buildSnapshot(ctx, root);
      const tree = await listTree(root);
      ctx.log(`validating ${tree.length} entries`);
      try {
        await validateRootfs(root, tree, await hashFile(path.join(ctx.dep("task"), TASK_INIT)));
      } catch (err) {
        if (err instanceof RootfsValidationError) throw new StageError("rootfs", err.message);
        throw err;
      }
      await smokeTest(ctx, root, tree);

      ctx.log("writing the manifest");
      const components = {
        busybox: await ctx.tool("/bin/busybox", "busybox-static", []),
        runc: await ctx.tool("/usr/sbin/runc", "runc"),
        node: await ctx.tool(pinnedNode(ctx.repo), "the pinned node (npm ci)"),
        gzip: await ctx.tool("gzip", "gzip"),
      };
      const manifest = await buildManifest(root, tree, components, ctx.options.sourceDateEpoch);
      await writeManifest(path.join(ctx.out, ROOTFS_MANIFEST), manifest);

      ctx.log(`archiving ${(manifest.totals.bytes / 1048576).toFixed(1)} MiB as newc cpio`);
      const cpio = path.join(scratch, "rootfs.cpio");
      await writeNewc(root, tree, cpio, ctx.options.sourceDateEpoch);
      ctx.log(`compressing (gzip -n ${GZIP_LEVEL})`);
      await ctx.$`gzip -n ${GZIP_LEVEL} ${cpio}`;
      await rename(`${cpio}.gz`, path.join(ctx.out, ROOTFS_ARCHIVE));
      const size = (await stat(path.join(ctx.out, ROOTFS_ARCHIVE))).size;
      ctx.log(
        `rootfs: ${(manifest.totals.bytes / 1048576).toFixed(1)} MiB in ${tree.length} entries, ${(size / 1048576).toFixed(1)} MiB gzip'd`,
      );
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: {},
};

async function stageTree(ctx: BuildContext, root: string): Promise<void> {
  const taskOut = ctx.dep("task");
  for (const f of TASK_REQUIRED) {
    if (!existsSync(path.join(taskOut, f))) {
      throw new StageError(
        "rootfs",
        `the task stage output ${taskOut} has no '${f}'; rebuild it with: kuasar-build task`,
      );
    }
  }

  ctx.log("directories and static files (rootfs/)");
  for (const d of Object.keys(DIRS)) await mkdir(path.join(root, d), { recursive: true });
  await copyStatic(path.join(ctx.repo, "rootfs"), root);

  ctx.log("agent: /sbin/init, /usr/lib/vmm-task");
  await install(path.join(taskOut, TASK_INIT), root, AGENT_INIT, 0o755);
  await symlink(`/${AGENT_INIT}`, path.join(root, INITRD_INIT));
  const notShipped: string[] = [];
  for (const name of (await readdir(taskOut)).sort()) {
    if (name === TASK_INIT) continue;
    if (!/\.(js|node)$/.test(name)) {
      notShipped.push(name);
      continue;
    }
    const src = path.join(taskOut, name);
    await install(src, root, `${AGENT_DIR}/${name}`, (await isElf(src)) ? 0o755 : 0o644);
  }
  if (notShipped.length) ctx.log(`not shipped (neither .js nor .node): ${notShipped.join(", ")}`);

  const elfs = hostElfs(ctx.repo);
  for (const e of elfs) {
    if (e.strip) await installStripped(ctx, root, e.host, e.guest);
    else {
      ctx.log(e.host);
      await install(e.host, root, e.guest, 0o755);
    }
  }

  // Libraries: the loader's closure of every dynamic ELF staged so far, at the path the host loader found them under.
  // The agent's ELFs may only use libraries already in the keyed closure, or a library upgrade would not rebuild.
  const keyed = await lddClosure(elfs.map((e) => e.host));
  const keyedPaths = new Set(keyed.map((l) => l.path));
  const agentElfs = (await elfFiles(root, await listTree(root)))
    .filter((f) => f === AGENT_INIT || f.startsWith(`${AGENT_DIR}/`))
    .map((f) => path.join(root, f));
  const extra = (await lddClosure(agentElfs)).find((l) => !keyedPaths.has(l.path));
  if (extra) {
    throw new StageError(
      "rootfs",
      `/${path.relative(root, extra.neededBy)} needs ${extra.path}, which is outside the libraries this stage is keyed on (the closure of ${elfs.map((e) => e.host).join(", ")}); add that library (host and guest path) to hostElfs in pipeline/stages/rootfs.ts`,
    );
  }
  for (const lib of keyed) await install(lib.path, root, lib.path.slice(1), (await stat(lib.path)).mode & 0o755);
  ctx.log(`libraries: ${keyed.map((l) => path.basename(l.path)).join(", ")}`);

  // busybox applets last, so they never shadow a real program (sbin/init is the agent's).
  const applets = (await ctx.$`/bin/busybox --list-full`).stdout.split("\n").filter(Boolean);
  const kept: string[] = [];
  let links = 0;
  for (const a of applets) {
    const dest = path.join(root, a);
    if (await lstat(dest).catch(() => undefined)) {
      if (a !== "bin/busybox") kept.push(`/${a}`);
      continue;
    }
    await mkdir(path.dirname(dest), { recursive: true });
    await symlink("/bin/busybox", dest);
    links++;
  }
  ctx.log(`busybox: ${links} applet links${kept.length ? `; kept the real ${kept.join(", ")}` : ""}`);

  // Every directory 0755 unless the contract says otherwise, whatever the umask made of it.
  await chmod(root, 0o755);
  for (const e of await listTree(root)) {
    if (e.type === "dir") await chmod(path.join(root, e.path), DIRS[e.path] ?? 0o755);
  }
}

/**
 * V8 flags the snapshot is built with, each for the same bytes from every build: Node keeps its pid in the heap (so
 * the build runs as pid 1 of its own namespace) and the text of a warning carries it too, a DataView's backing-store
 * address is serialized (no ASLR, one malloc arena, no V8 worker threads allocating meanwhile), and hash tables follow
 * the hash and random seeds. The guest's node does not need them to start from the blob.
 */
const SNAPSHOT_BUILD_FLAGS = ["--no-warnings", "--single-threaded", "--hash-seed=1", "--random-seed=1"];

/**
 * node's snapshot builder settings (--build-snapshot-config), written into the root for the build and removed after.
 * withoutCodeCache leaves out the code cache of node's own modules: 5 of the blob's 8.5 MiB, which node keeps in
 * memory for the life of the process, and under TCG useless, since the guest's --jitless fails the cache's flag
 * check. Without it the idle agent's RssAnon went from 20.8 to 14.3 MiB (measured on the host) with no slower start
 * under TCG (six floor boots of each, side by side, 2026-12-03).
 */
const SNAPSHOT_CONFIG = "snapshot-config.json";

/**
 * The agent's V8 startup snapshot: the guest's node evaluates the bundle (every module, the protobuf registries) at
 * build time, chrooted at the guest's paths since the bundle's own path is part of what it keeps, and the guest starts
 * from the blob instead of compiling and evaluating ~340 KB of JavaScript at every boot (BENCHMARKS.md, sandbox-start).
 */
async function buildSnapshot(ctx: BuildContext, root: string): Promise<void> {
  ctx.log(`V8 startup snapshot of /${AGENT_BUNDLE} -> /${AGENT_SNAPSHOT}`);
  // chroot needs root; elsewhere a user namespace maps the builder to it.
  const user = process.getuid?.() === 0 ? [] : ["--user", "--map-root-user"];
  const node = [`/${GUEST_NODE}`, ...SNAPSHOT_BUILD_FLAGS, "--snapshot-blob", `/${AGENT_SNAPSHOT}`];
  const config = path.join(root, SNAPSHOT_CONFIG);
  await writeFile(config, JSON.stringify({ builder: `/${AGENT_BUNDLE}`, withoutCodeCache: true }));
  try {
    await ctx.$`unshare ${user} --pid --fork --kill-child setarch ${os.machine()} --addr-no-randomize chroot ${root} /bin/busybox env -i MALLOC_ARENA_MAX=1 ${node} --build-snapshot-config /${SNAPSHOT_CONFIG}`;
  } finally {
    await rm(config, { force: true });
  }
  const blobFile = path.join(root, AGENT_SNAPSHOT);
  await chmod(blobFile, 0o644);
  const blob = await readFile(blobFile);
  ctx.log(`snapshot: ${(blob.length / 1048576).toFixed(1)} MiB`);
  // vmm-task maps this over node's private copy of the V8 startup data (runtime/agent/startup-data.ts).
  const { v8StartupData } = readSnapshotBlob(blob, `/${AGENT_SNAPSHOT}`);
  await writeFile(path.join(root, AGENT_STARTUP_DATA), startupDataFile(v8StartupData), { mode: 0o644 });
  ctx.log(`V8 startup data (${(v8StartupData.length / 1048576).toFixed(1)} MiB) -> /${AGENT_STARTUP_DATA}`);
}

/** A binary without its debug sections and static symbol table (the same code and dynamic symbols). */
async function installStripped(ctx: BuildContext, root: string, host: string, guest: string): Promise<void> {
  const dest = path.join(root, guest);
  await mkdir(path.dirname(dest), { recursive: true });
  await ctx.$`strip --strip-all -o ${dest} ${host}`;
  await chmod(dest, 0o755);
  const mib = async (f: string) => `${((await stat(f)).size / 1048576).toFixed(1)} MiB`;
  ctx.log(`${host}: strip --strip-all ${await mib(host)} -> ${await mib(dest)}`);
}

async function install(src: string, root: string, guest: string, mode: number): Promise<void> {
  const dest = path.join(root, guest);
  await mkdir(path.dirname(dest), { recursive: true });
  await copyFile(src, dest);
  await chmod(dest, mode);
}

/** Copies the repo's rootfs/ tree: files 0755 if git marks them executable, else 0644; symlinks as they are. */
async function copyStatic(src: string, dest: string): Promise<void> {
  for (const name of (await readdir(src)).sort()) {
    const s = path.join(src, name);
    const d = path.join(dest, name);
    const st = await lstat(s);
    if (st.isDirectory()) {
      await mkdir(d, { recursive: true });
      await copyStatic(s, d);
    } else if (st.isSymbolicLink()) await symlink(await readlink(s), d);
    else await install(s, dest, name, st.mode & 0o111 ? 0o755 : 0o644);
  }
}

/**
 * Runs the staged runc and node the way the guest will: chrooted into the stage dir (we build as root). Where
 * chroot is not permitted, falls back to the staged loader with --library-path (weaker: the loader still searches
 * the host's system directories after it), and says so.
 */
async function smokeTest(ctx: BuildContext, root: string, tree: TreeEntry[]): Promise<void> {
  const addons = tree.filter(
    (e) => e.type === "file" && e.path.startsWith(`${AGENT_DIR}/`) && e.path.endsWith(".node"),
  );
  const nodeArgs = ["-e", "for (const a of process.argv.slice(1)) require(a); process.stdout.write(process.version)"];
  const checks: [string, string[]][] = [
    ["usr/sbin/runc", ["--version"]],
    ["usr/bin/node", [...nodeArgs, ...addons.map((a) => `/${a.path}`)]],
  ];
  // The guest's environment, not the builder's (NODE_EXTRA_CA_CERTS and the like would leak in); the shell zx
  // runs the command through adds only PWD, SHLVL and _.
  const guest$ = ctx.$({ env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root" } });
  let chrooted = process.getuid?.() === 0;
  for (const [prog, args] of checks) {
    if (chrooted) {
      try {
        const out = await guest$`chroot ${root} /${prog} ${args}`;
        ctx.log(`chroot ${prog}: ${out.stdout.split("\n")[0]}`);
        continue;
      } catch (err) {
        if (!/cannot change root directory/.test((err as Error).message)) throw err;
        chrooted = false;
      }
    }
    const interp = (await readElf(path.join(root, prog))).interpreter;
    if (!interp) {
      throw new StageError("rootfs", `/${prog} has no ELF interpreter; expected a dynamically linked binary`);
    }
    const libPath = systemLibDirs()
      .map((d) => path.join(root, d))
      .join(":");
    const hostArgs = args.map((a) => (a.startsWith(`/${AGENT_DIR}/`) ? path.join(root, a) : a));
    const loaderArgs = ["--inhibit-cache", "--library-path", libPath, path.join(root, prog), ...hostArgs];
    const out = await guest$`${path.join(root, interp)} ${loaderArgs}`;
    ctx.log(`${prog} via the staged loader (chroot not permitted): ${out.stdout.split("\n")[0]}`);
  }
}
