import { copyFile, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { buildNative } from "../../runtime/native/build.ts";
import { AGENT_ADDONS, buildGypAddon } from "../../runtime/native/gyp.ts";
import { bundleInputs, bundleNode, SHARED_LAYERS } from "../lib/bundle.ts";
import type { Stage } from "../lib/stage.ts";

/** Source trees vmm-task is built from: the agent, the protocol layer it imports, and the native code. */
const SOURCES = ["runtime/agent", ...SHARED_LAYERS, "runtime/native"];

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
    };
  },
  async build(ctx) {
    ctx.log("bundling runtime/agent/main.ts");
    await bundleNode(path.join(ctx.repo, "runtime/agent/main.ts"), path.join(ctx.out, "vmm-task.js"));
    ctx.log("building the vsock addon and init");
    const scratch = await mkdtemp(path.join(os.tmpdir(), "kuasar-native-"));
    try {
      const native = await buildNative({ outDir: scratch });
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
    "vsock.node": "vsock.node",
    "pty.node": "pty.node",
    "ns.node": "ns.node",
    init: "vmm-task-init",
  },
};
