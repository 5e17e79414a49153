import type { Stage } from "../lib/stage.ts";
import { unitsStage } from "./units.ts";

/** Every stage the CLI knows, in no particular order (the runner orders them by dependencies). */
export const allStages: Stage[] = [unitsStage];

/** What `all` builds. */
export const defaultTargets = allStages.map((s) => s.name);
