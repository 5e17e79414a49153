import { readFileSync } from "node:fs";
import { parseCmdline, type TaskParams } from "../contract/kernel-params.ts";

/** The task.* parameters the guest booted with. */
export function readCmdline(file = "/proc/cmdline"): TaskParams {
  return parseCmdline(readFileSync(file, "utf8"));
}
