import { copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import type { Stage } from "../lib/stage.ts";

/** installers/ source file -> output name (also the bin/ name). */
const FILES: Record<string, string> = {
  "systemd/kuasar-vmm.service": "kuasar-vmm.service",
  "sysconfig/kuasar-vmm": "kuasar-vmm.sysconfig",
  "containerd/kuasar-vmm.toml": "containerd-kuasar-vmm.toml",
  "config/config_qemu_x86_64.toml": "config_qemu_x86_64.toml",
  "config/config_clh.toml": "config_clh.toml",
  "config/config_stratovirt_x86_64.toml": "config_stratovirt_x86_64.toml",
};

/** The host service files from installers/, gathered as one cacheable unit of artifacts. */
export const unitsStage: Stage = {
  name: "units",
  title: "Host service files (systemd unit, sysconfig, containerd drop-in, configs)",
  deps: [],
  async inputs(ctx) {
    const digests: Record<string, string> = {};
    for (const src of Object.keys(FILES)) digests[src] = await ctx.fileDigest(path.join(ctx.repo, "installers", src));
    return { digests };
  },
  async build(ctx) {
    await mkdir(ctx.out, { recursive: true });
    for (const [src, name] of Object.entries(FILES)) {
      ctx.log(`installers/${src}`);
      await copyFile(path.join(ctx.repo, "installers", src), path.join(ctx.out, name));
    }
  },
  publish: Object.fromEntries(Object.values(FILES).map((n) => [n, n])),
};
