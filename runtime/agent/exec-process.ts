import { writeFile } from "node:fs/promises";
import type { OciProcess } from "../contract/oci.ts";
import { TaskError } from "./errors.ts";
import type { IoOptions, Proc } from "./process.ts";
import { adjustProcessSpec, type GuestLsm } from "./spec.ts";

/** Checks the process spec of an Exec request: it must run something, and want a terminal exactly when io does. */
export function checkExecSpec(id: string, execId: string, spec: OciProcess, io: IoOptions): void {
  if (!Array.isArray(spec.args) || spec.args.length === 0) {
    throw new TaskError("InvalidArgument", `exec ${execId} of container ${id}: the process spec has no args`);
  }
  if (Boolean(spec.terminal) !== Boolean(io.terminal)) {
    throw new TaskError(
      "InvalidArgument",
      `exec ${execId} of container ${id}: terminal=${Boolean(io.terminal)} was requested but the process spec has terminal=${Boolean(spec.terminal)}`,
    );
  }
}

/** Writes the OCI process `runc exec --process` runs for the exec p, adjusted for the guest. */
export async function writeExecProcess(file: string, p: Proc, lsm: GuestLsm): Promise<void> {
  const spec: OciProcess = adjustProcessSpec(p.spec ?? {}, lsm);
  // runc sizes the pty before the process runs; a resize after runc returns could come too late.
  if (p.terminal && p.pendingSize) spec.consoleSize = { height: p.pendingSize.rows, width: p.pendingSize.cols };
  await writeFile(file, JSON.stringify(spec));
}
