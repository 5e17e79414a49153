import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import type { OciSpec } from "../contract/oci.ts";
import { TaskError } from "./errors.ts";

export interface ContainerDirOptions {
  /** The agent's state directory; the container's directory is <stateDir>/<id>. */
  stateDir: string;
  /** A container id validated as a file name (ContainerRegistry.reserve). */
  id: string;
  /** The host's bundle, in the share. */
  bundle: string;
  /** Whether the create asked for a terminal; the spec's process.terminal must agree. */
  terminal: boolean;
  /** Writes the runc bundle in target from the host's bundle. */
  prepareBundle: (source: string, target: string) => Promise<OciSpec>;
}

/**
 * Makes the container's directory afresh and writes the bundle runc runs from into it: the host's bundle, in the
 * share, is read-only here and never rewritten. Returns the directory; on failure nothing of it is left.
 */
export async function prepareContainerDir(opts: ContainerDirOptions): Promise<string> {
  const { id, bundle, terminal } = opts;
  const dir = path.join(opts.stateDir, id);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const spec = await opts.prepareBundle(bundle, dir).catch(async (e: unknown) => {
    await removeContainerDir(dir);
    throw e;
  });
  if (Boolean(spec.process?.terminal) !== terminal) {
    await removeContainerDir(dir);
    throw new TaskError(
      "InvalidArgument",
      `container ${id}: terminal=${terminal} was requested but ${bundle}/config.json has process.terminal=${Boolean(spec.process?.terminal)}; they must match`,
    );
  }
  return dir;
}

export function removeContainerDir(dir: string): Promise<void> {
  return rm(dir, { recursive: true, force: true });
}
