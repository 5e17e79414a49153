import { writeFile } from "node:fs/promises";
import path from "node:path";
import { bundleInputs, bundleNode, SHARED_LAYERS } from "../lib/bundle.ts";
import type { Stage } from "../lib/stage.ts";
import { pinnedNode } from "./node-runtime.ts";

/** Sources the daemon is bundled from: itself, the protocol layer and the gRPC adapter. */
const SOURCES = [
  "runtime/sandboxer",
  ...SHARED_LAYERS,
  "runtime/grpc",
  // kuasar-ctl, and the host check both binaries run (it reads task.* parameters with the contract's parser).
  "runtime/ctl",
  "runtime/doctor",
  "runtime/shim",
];

const SHIM = "containerd-shim-kuasar-vmm-v1";

/**
 * vmm-sandboxer: the host daemon as one executable file (it loads the vsock addon the task stage builds), and the
 * containerd-shim-kuasar-vmm-v1 helper containerd's restart path runs.
 */
export const sandboxerStage: Stage = {
  name: "sandboxer",
  title: "Host daemon vmm-sandboxer (bundle)",
  deps: [],
  async inputs(ctx) {
    return {
      ...(await bundleInputs(ctx, SOURCES)),
      node: await ctx.fileDigest(pinnedNode(ctx.repo)),
      strip: await ctx.tool("strip", "binutils"),
    };
  },
  async build(ctx) {
    ctx.log("bundling runtime/sandboxer/main.ts");
    await bundleNode(path.join(ctx.repo, "runtime/sandboxer/main.ts"), path.join(ctx.out, "vmm-sandboxer"), {
      executable: true,
    });
    ctx.log("bundling runtime/shim/main.ts");
    await bundleNode(path.join(ctx.repo, "runtime/shim/main.ts"), path.join(ctx.out, SHIM), { executable: true });
    ctx.log("bundling runtime/ctl/main.ts");
    await bundleNode(path.join(ctx.repo, "runtime/ctl/main.ts"), path.join(ctx.out, "kuasar-ctl"), {
      executable: true,
    });
    // The runtime install-vmm gives these programs: a node host (Debian 12 ships Node 18) need not have one. It is the
    // pinned build the guest runs too, without DWARF and static symbols (the addons link against .dynsym, kept).
    const node = pinnedNode(ctx.repo);
    ctx.log(`the node runtime: ${(await ctx.$`${node} --version`).stdout.trim()}, strip --strip-all`);
    await ctx.$`strip --strip-all -o ${path.join(ctx.out, "node")} ${node}`;
    // The bundle is CommonJS; inside this repo the root package.json says "module", so bin/ says otherwise.
    await writeFile(path.join(ctx.out, "package.json"), '{ "type": "commonjs" }\n');
  },
  publish: {
    "vmm-sandboxer": "vmm-sandboxer",
    "kuasar-ctl": "kuasar-ctl",
    [SHIM]: SHIM,
    node: "node",
    "package.json": "package.json",
  },
};
