import { readFile } from "node:fs/promises";
import { parseCmdline, type TaskParams } from "../contract/kernel-params.ts";

/** The task.* parameters the guest booted with. */
export async function readCmdline(file = "/proc/cmdline"): Promise<TaskParams> {
  return parseCmdline(await readFile(file, "utf8"));
}
