import { $quiet } from "./shell.ts";

export class MissingToolError extends Error {
  constructor(tool: string, pkg: string) {
    super(
      `required tool '${tool}' was not found on PATH; install it with: apt-get install -y ${pkg} (or run scripts/install-prereqs.sh)`,
    );
    this.name = "MissingToolError";
  }
}

const versionCache = new Map<string, string>();

/**
 * The first line a tool prints for its version flag. Part of stage cache keys, so an upgraded
 * compiler or mke2fs rebuilds what it produced. Throws MissingToolError naming the Debian package.
 */
export async function toolVersion(tool: string, pkg: string, args: string[] = ["--version"]): Promise<string> {
  const k = `${tool} ${args.join(" ")}`;
  const hit = versionCache.get(k);
  if (hit !== undefined) return hit;
  // Some tools (mke2fs -V) print their version to stderr and exit non-zero: read both, judge only ENOENT.
  const r = await $quiet({ nothrow: true })`${tool} ${args}`;
  if (r.exitCode === 127 || (/not found|ENOENT/.test(r.stderr) && r.stdout === ""))
    throw new MissingToolError(tool, pkg);
  const line = `${r.stdout}\n${r.stderr}`.split("\n").find((l) => l.trim() !== "") ?? "";
  versionCache.set(k, line.trim());
  return line.trim();
}
