import { readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * What the daemon leaves in containerd's bundle directory of each container task: the task API that serves it.
 * containerd's restart path knows only the bundle and the container id when it runs the shim binary.
 */
export interface TaskLink {
  sandboxId: string;
  /** ttrpc+unix:// address of the sandbox's task API. */
  taskAddress: string;
}

export const TASK_LINK_FILE = "kuasar-vmm.json";

export async function writeTaskLink(bundle: string, link: TaskLink): Promise<void> {
  const file = path.join(bundle, TASK_LINK_FILE);
  await writeFile(`${file}.tmp`, `${JSON.stringify(link)}\n`);
  await rename(`${file}.tmp`, file);
}

/** The link in a bundle, or undefined when there is none or it is unreadable. */
export async function readTaskLink(bundle: string): Promise<TaskLink | undefined> {
  try {
    const v = JSON.parse(await readFile(path.join(bundle, TASK_LINK_FILE), "utf8")) as Partial<TaskLink>;
    return typeof v.sandboxId === "string" && typeof v.taskAddress === "string"
      ? { sandboxId: v.sandboxId, taskAddress: v.taskAddress }
      : undefined;
  } catch {
    return undefined;
  }
}
