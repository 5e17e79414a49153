import { copyFile, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { buildNative } from "../../runtime/native/build.ts";
import { AGENT_ADDONS, buildGypAddon } from "../../runtime/native/gyp.ts";
import { bundleInputs, bundleNode, SHARED_LAYERS } from "../lib/bundle.ts";
import type { Stage } from "../lib/stage.ts";

/** Source trees vmm-task is built from: the agent, the protocol layer it imports, and the native code. */
const SOURCES = ["runtime/agent", ...SHARED_LAYERS, "runtime/native"];

/** Guest paths (root-relative) of node and of the agent's V8 startup snapshot, which the rootfs stage builds. */
export const GUEST_NODE = "usr/bin/node";
export const AGENT_SNAPSHOT = "usr/lib/vmm-task/vmm-task.blob";
/** The V8 startup data of that snapshot, laid out for the agent to map over node's copy (contract/startup-data.ts). */
export const AGENT_STARTUP_DATA = "usr/lib/vmm-task/vmm-task.v8-startup";

/**
 * What the guest's init runs: node starting from the snapshot, which runs the agent's main. node copies the V8 part
 * of the blob (3.3 MiB) into memory it keeps for the life of the process; once serving, the agent maps the same bytes
 * from the image over that copy (runtime/agent/startup-data.ts), so they stop being private to each guest. Without a
 * snapshot the agent served 1.2-2.3 s later under TCG (sandbox-start, 2026-12-03), at about the RssAnon the snapshot
 * had before that remapping (14.7 MiB, density; rootfs.ts says why). No heap flags: none of --max-semi-space-size=1, --single-threaded(-gc), --lite-mode, --max-lazy or a full GC once serving moved the
 * snapshot agent's RssAnon by more than 0.2 MiB (measured on the host; the first in the guest too). Under TCG init
 * adds --jitless (init.c).
 */
export const AGENT_ARGV = [
  `/${GUEST_NODE}`,
  "--snapshot-blob",
  `/${AGENT_SNAPSHOT}`,
  "--",
  "--startup-data",
  `/${AGENT_STARTUP_DATA}`,
];

/** vmm-task: the guest agent bundled into one file, its native addons, and the static C init that runs it as PID 1. */
export const vmmTaskStage: Stage = {
  name: "task",
  title: "Guest agent vmm-task (bundle, vsock + pty + ns addons, init)",
  deps: [],
  async inputs(ctx) {
    return {
      ...(await bundleInputs(ctx, SOURCES)),
      node: process.version,
      cc: await ctx.tool("cc", "build-essential"),
      agentArgv: AGENT_ARGV,
    };
  },
  async build(ctx) {
    ctx.log("bundling runtime/agent/main.ts");
    // OpenTelemetry loads on the first traced request only: a file of its own keeps it out of the agent's bundle.
    await bundleNode(path.join(ctx.repo, "runtime/agent/main.ts"), path.join(ctx.out, "vmm-task.js"), {
      apart: { "runtime/trace/guest-otel.ts": "vmm-task-otel.js" },
    });
    ctx.log("building the vsock addon and init");
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-native-"));
    try {
      const native = await buildNative({ outDir: scratch, agentArgv: AGENT_ARGV });
      await copyFile(native.vsockAddon, path.join(ctx.out, "vsock.node"));
      await copyFile(native.init, path.join(ctx.out, "init"));
      for (const addon of AGENT_ADDONS) {
        ctx.log(`building the ${addon} addon`);
        await copyFile(await buildGypAddon(addon, scratch), path.join(ctx.out, `${addon}.node`));
      }
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  },
  publish: {
    "vmm-task.js": "vmm-task",
    "vmm-task-otel.js": "vmm-task-otel.js",
    "vsock.node": "vsock.node",
    "pty.node": "pty.node",
    "ns.node": "ns.node",
    init: "vmm-task-init",
  },
};
