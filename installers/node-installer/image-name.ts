import { readFile } from "node:fs/promises";
import path from "node:path";

// The installer image's name: the build tags it, the DaemonSet runs it.

/** Pulled by nobody: imported on each node (ctr -n k8s.io images import) or pushed to a registry under this name. */
export const IMAGE_REPO = "localhost/kuasar-vmm-node-installer";
export const IMAGE_ARCHIVE = "kuasar-vmm-node-installer.tar";

export function imageName(version: string): string {
  return `${IMAGE_REPO}:${version}`;
}

/** The image's tag: the version in the repo's package.json. */
export async function packageVersion(repo: string): Promise<string> {
  return (JSON.parse(await readFile(path.join(repo, "package.json"), "utf8")) as { version: string }).version;
}
