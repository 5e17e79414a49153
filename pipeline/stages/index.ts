import type { Stage } from "../lib/stage.ts";
import { distStage } from "./dist.ts";
import { imageStage } from "./image.ts";
import { initrdStage } from "./initrd.ts";
import { kernelStage } from "./kernel.ts";
import { nodeInstallerStage } from "./node-installer.ts";
import { rootfsStage } from "./rootfs.ts";
import { sandboxerStage } from "./sandboxer.ts";
import { unitsStage } from "./units.ts";
import { vmmTaskStage } from "./vmm-task.ts";

/** Every stage the CLI knows, in no particular order (the runner orders them by dependencies). */
export const allStages: Stage[] = [
  kernelStage,
  vmmTaskStage,
  sandboxerStage,
  rootfsStage,
  imageStage,
  initrdStage,
  unitsStage,
  nodeInstallerStage,
  distStage,
];

/** What `all` builds: the published artifacts (rootfs is only an intermediate of the image and initrd). */
export const defaultTargets = ["kernel", "task", "sandboxer", "image", "initrd", "units"];
