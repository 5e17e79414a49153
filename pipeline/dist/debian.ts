import { readFile, stat } from "node:fs/promises";
import { hashFile } from "../lib/hash.ts";
import { $quiet } from "../lib/shell.ts";
import { MissingToolError } from "../lib/tools.ts";

// Which Debian packages the guest's files came from. A guest file is credited to a package only when the build
// host has the same bytes at that path (or its /usr-merged twin) and dpkg says which package put them there: a
// file the pipeline changed (node without its DWARF) or brought from elsewhere is listed as a file, never credited
// to the package that happens to own its path on this host.

export interface GuestFile {
  /** Absolute path in the guest. */
  path: string;
  sha256: string;
}

export interface DebianPackage {
  name: string;
  version: string;
  arch: string;
  /** The guest files it provided, sorted. */
  files: string[];
}

/** What the attribution asks of the host; tests give a fake. */
export interface HostPackages {
  /** sha256 of a host file, or undefined when there is none (or it is not a regular file). */
  digest(path: string): Promise<string | undefined>;
  /** The package owning each path dpkg knows (`dpkg-query -S`); unknown paths are left out. */
  owners(paths: string[]): Promise<Map<string, string>>;
  /** Version and architecture of installed packages (`dpkg-query -W`). */
  versions(packages: string[]): Promise<Map<string, { version: string; arch: string }>>;
  /** The distribution as purl's deb type names it: debian-12. */
  distro(): Promise<string>;
}

/** /lib/x -> [/lib/x, /usr/lib/x]: on a /usr-merged host dpkg knows a file under the name its package ships. */
export function pathVariants(p: string): string[] {
  const m = /^\/(bin|sbin|lib|lib32|lib64|libx32)\//.exec(p);
  if (m) return [p, `/usr${p}`];
  const u = /^\/usr\/(bin|sbin|lib|lib32|lib64|libx32)\//.exec(p);
  if (u) return [p, p.slice(4)];
  return [p];
}

export async function attribute(
  files: GuestFile[],
  host: HostPackages,
): Promise<{ packages: DebianPackage[]; unattributed: GuestFile[] }> {
  const sameBytes = new Map<string, string[]>();
  const unattributed: GuestFile[] = [];
  for (const f of files) {
    const variants: string[] = [];
    for (const v of pathVariants(f.path)) if ((await host.digest(v)) === f.sha256) variants.push(v);
    if (variants.length) sameBytes.set(f.path, variants);
    else unattributed.push(f);
  }
  const owners = await host.owners([...sameBytes.values()].flat());
  const byPackage = new Map<string, string[]>();
  for (const [guest, variants] of sameBytes) {
    const owner = variants.map((v) => owners.get(v)).find((o) => o !== undefined);
    if (!owner) {
      unattributed.push(files.find((f) => f.path === guest)!);
      continue;
    }
    byPackage.set(owner, [...(byPackage.get(owner) ?? []), guest]);
  }
  const versions = await host.versions([...byPackage.keys()]);
  const packages: DebianPackage[] = [];
  for (const [name, owned] of byPackage) {
    const v = versions.get(name);
    if (!v) throw new Error(`dpkg names ${name} as the owner of ${owned[0]} but does not list it as installed`);
    packages.push({ name, ...v, files: owned.sort() });
  }
  packages.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  unattributed.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { packages, unattributed };
}

/** `dpkg-query -S` lines: "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6" ("a, b: path" when shared). */
export function parseOwners(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    if (line.startsWith("diversion by ")) continue;
    const m = /^(.+?): (\/.*)$/.exec(line);
    if (!m) continue;
    // Multi-arch packages are named package:arch; the version query wants the name alone.
    const pkg = m[1]!.split(", ")[0]!.replace(/:[a-z0-9]+$/, "");
    out.set(m[2]!, pkg);
  }
  return out;
}

async function dpkgQuery(args: string[]) {
  const r = await $quiet({ nothrow: true })`dpkg-query ${args}`;
  if (r.exitCode === 127 || /ENOENT/.test(String(r.cause ?? ""))) throw new MissingToolError("dpkg-query", "dpkg");
  return r;
}

export const hostDpkg: HostPackages = {
  async digest(p) {
    const st = await stat(p).catch(() => undefined);
    if (!st?.isFile()) return undefined;
    return hashFile(p);
  },
  async owners(paths) {
    if (paths.length === 0) return new Map();
    // Exit 1 when some path is not known; the known ones are still printed.
    return parseOwners((await dpkgQuery(["-S", ...paths])).stdout);
  },
  async versions(packages) {
    const out = new Map<string, { version: string; arch: string }>();
    if (packages.length === 0) return out;
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own field syntax
    const r = await dpkgQuery(["-W", "-f=${Package}\t${Version}\t${Architecture}\n", ...packages]);
    for (const line of r.stdout.split("\n")) {
      const [name, version, arch] = line.split("\t");
      if (name && version && arch) out.set(name, { version, arch });
    }
    return out;
  },
  async distro() {
    const text = await readFile("/etc/os-release", "utf8").catch(() => "");
    return osReleaseDistro(text);
  },
};

/** ID-VERSION_ID of an os-release file (debian-12); ID alone for a release without a number (sid). */
export function osReleaseDistro(text: string): string {
  const field = (k: string) => new RegExp(`^${k}="?([^"\n]*)"?$`, "m").exec(text)?.[1];
  const id = field("ID");
  if (!id) throw new Error("/etc/os-release has no ID: cannot name the distribution the guest's packages came from");
  const version = field("VERSION_ID");
  return version ? `${id}-${version}` : id;
}
