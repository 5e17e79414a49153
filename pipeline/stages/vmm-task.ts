import { copyFile, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { buildNative } from "../../runtime/native/build.ts";
import { AGENT_ADDONS, buildGypAddon } from "../../runtime/native/gyp.ts";
import { bundleInputs, bundleNode, SHARED_LAYERS } from "../lib/bundle.ts";
import type { Stage } from "../lib/stage.ts";
import { AGENT_BUNDLE } from "../rootfs/validate.ts";

/** Source trees vmm-task is built from: the agent, the protocol layer it imports, and the native code. */
const SOURCES = ["runtime/agent", ...SHARED_LAYERS, "runtime/native"];

/** Guest path (root-relative) of node. */
export const GUEST_NODE = "usr/bin/node";

/**
 * What the guest's init runs: node on the agent's bundle. A 1 MiB semi-space keeps V8's young generation at 2 MiB
 * where the agent's start grows it to 4 MiB (RssAnon 1.6 MiB lower, measured on the host). No V8 startup snapshot:
 * node keeps a private copy of the blob's heap image for the life of the process (+7 MiB RssAnon for an empty
 * snapshot, +5 MiB for the agent's), while under TCG the guest served no sooner with it than without (bench/,
 * 2026-12-03). Under TCG init adds --jitless (init.c).
 */
export const AGENT_ARGV = [`/${GUEST_NODE}`, "--max-semi-space-size=1", `/${AGENT_BUNDLE}`];

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
