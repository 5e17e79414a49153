import { createHash } from "node:crypto";
import type { DebianPackage, GuestFile } from "./debian.ts";
import type { LockPackage } from "./npm.ts";

// A CycloneDX 1.5 JSON SBOM of the release bundle, written by hand: the handful of fields used here are fixed by
// the schema (http://cyclonedx.org/schema/bom-1.5.schema.json), and test/unit/pipeline/dist-sbom.test.ts checks the
// output against the schema's rules for each of them. Deterministic: no wall clock, no random serial number.

export const SPEC_VERSION = "1.5";

export interface KernelFacts {
  /** e.g. 6.1.192 (vmlinux.manifest.json kernelVersion) */
  version: string;
  /** sha256 of the kernel's .config */
  configSha256: string;
  /** sha256 of vmlinux.bin as shipped */
  sha256: string;
  profile: string;
  hypervisors: string[];
  source: { kind: string; location: string; sha256?: string };
  /** The Debian package the source tarball came from, when the host still has those bytes. */
  sourcePackage?: { name: string; version: string; arch: string };
  /** Patches applied to the source, in order (vmlinux.manifest.json patches). */
  patches: { file: string; sha256: string }[];
}

export interface SbomInput {
  /** kuasar-vmm's version (package.json) */
  version: string;
  /** SOURCE_DATE_EPOCH: the BOM's timestamp */
  epoch: number;
  /** npm packages inside the shipped programs */
  npm: LockPackage[];
  /** Debian packages the guest's files came from; distro as purl wants it, e.g. debian-12 */
  debian: { distro: string; packages: DebianPackage[] };
  /** Third-party guest files no package is credited with, with the version the image manifest records if any */
  guestFiles: (GuestFile & { version?: string })[];
  kernel: KernelFacts;
  /** The node runtime the host programs run on (bin/node) */
  node: { version: string; sha256: string };
}

interface Hash {
  alg: "SHA-1" | "SHA-256" | "SHA-512";
  content: string;
}
interface Property {
  name: string;
  value: string;
}
/** A change made to a component's source; diff.url names the patch file. */
interface Patch {
  type: "unofficial";
  diff: { url: string };
}
export interface Component {
  type: "application" | "library" | "operating-system" | "file" | "platform";
  "bom-ref"?: string;
  name: string;
  group?: string;
  version?: string;
  purl?: string;
  hashes?: Hash[];
  licenses?: { expression: string }[];
  pedigree?: { ancestors?: Component[]; patches?: Patch[] };
  properties?: Property[];
}

/** pkg:npm/%40scope/name@version (purl-spec's npm type: the scope is the namespace, its @ encoded). */
export function npmPurl(name: string, version: string): string {
  const slash = name.startsWith("@") ? name.indexOf("/") : -1;
  const ns = slash > 0 ? `${encodeURIComponent(name.slice(0, slash))}/` : "";
  return `pkg:npm/${ns}${encodeURIComponent(slash > 0 ? name.slice(slash + 1) : name)}@${encodeURIComponent(version)}`;
}

/** pkg:deb/debian/name@version?arch=...&distro=... (a Debian epoch's ':' and '+' are percent-encoded). */
export function debPurl(name: string, version: string, arch: string, distro: string): string {
  return `pkg:deb/debian/${encodeURIComponent(name)}@${encodeURIComponent(version)}?arch=${encodeURIComponent(arch)}&distro=${encodeURIComponent(distro)}`;
}

/** npm's integrity ("sha512-<base64>") as a CycloneDX hash (hex). */
export function integrityHash(integrity: string): Hash | undefined {
  const m = /^(sha1|sha256|sha512)-([A-Za-z0-9+/=]+)$/.exec(integrity.split(" ")[0] ?? "");
  if (!m) return undefined;
  const alg = ({ sha1: "SHA-1", sha256: "SHA-256", sha512: "SHA-512" } as const)[m[1] as "sha1" | "sha256" | "sha512"];
  return { alg, content: Buffer.from(m[2]!, "base64").toString("hex") };
}

/** A name-based UUID (the version-5 layout) from the BOM's content: the same bundle gets the same serial. */
function serialOf(content: string): string {
  const h = createHash("sha256").update(content).digest("hex");
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `urn:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function npmComponent(p: LockPackage): Component {
  const hash = p.integrity ? integrityHash(p.integrity) : undefined;
  return {
    type: "library",
    // Two copies of one name@version may sit at different places in node_modules: the lock key tells them apart.
    "bom-ref": `npm:${p.key}`,
    name: p.name,
    version: p.version,
    purl: npmPurl(p.name, p.version),
    ...(hash ? { hashes: [hash] } : {}),
    ...(p.license ? { licenses: [{ expression: p.license }] } : {}),
  };
}

function debianComponent(p: DebianPackage, distro: string): Component {
  const purl = debPurl(p.name, p.version, p.arch, distro);
  return {
    type: "library",
    "bom-ref": purl,
    name: p.name,
    version: p.version,
    purl,
    properties: p.files.map((f) => ({ name: "kuasar:guest:file", value: f })),
  };
}

function kernelComponent(k: KernelFacts, distro: string): Component {
  const props: Property[] = [
    { name: "kuasar:kernel:config-sha256", value: k.configSha256 },
    { name: "kuasar:kernel:profile", value: k.profile },
    ...k.hypervisors.map((h) => ({ name: "kuasar:kernel:hypervisor", value: h })),
    { name: "kuasar:kernel:source", value: `${k.source.kind} ${k.source.location}` },
  ];
  if (k.source.sha256) props.push({ name: "kuasar:kernel:source-sha256", value: k.source.sha256 });
  for (const p of k.patches) props.push({ name: "kuasar:kernel:patch", value: `${p.file} sha256:${p.sha256}` });
  const src = k.sourcePackage;
  const pedigree: NonNullable<Component["pedigree"]> = {};
  if (src) {
    pedigree.ancestors = [
      {
        type: "operating-system",
        name: src.name,
        version: src.version,
        purl: debPurl(src.name, src.version, src.arch, distro),
      },
    ];
  }
  if (k.patches.length > 0) pedigree.patches = k.patches.map((p) => ({ type: "unofficial", diff: { url: p.file } }));
  return {
    type: "operating-system",
    "bom-ref": `kernel:linux@${k.version}`,
    name: "linux",
    version: k.version,
    purl: `pkg:generic/linux@${encodeURIComponent(k.version)}`,
    hashes: [{ alg: "SHA-256", content: k.sha256 }],
    ...(Object.keys(pedigree).length > 0 ? { pedigree } : {}),
    properties: props,
  };
}

export function cycloneDx(input: SbomInput): Record<string, unknown> {
  const nodeVersion = input.node.version.replace(/^v/, "");
  const components: Component[] = [
    ...input.npm.map(npmComponent),
    ...input.debian.packages.map((p) => debianComponent(p, input.debian.distro)),
    ...input.guestFiles.map(
      (f): Component => ({
        type: "file",
        "bom-ref": `guest:${f.path}`,
        name: f.path,
        ...(f.version ? { version: f.version } : {}),
        hashes: [{ alg: "SHA-256", content: f.sha256 }],
        properties: [{ name: "kuasar:guest:file", value: f.path }],
      }),
    ),
    kernelComponent(input.kernel, input.debian.distro),
    {
      type: "platform",
      "bom-ref": `runtime:node@${nodeVersion}`,
      name: "node",
      version: nodeVersion,
      purl: `pkg:generic/node@${encodeURIComponent(nodeVersion)}`,
      hashes: [{ alg: "SHA-256", content: input.node.sha256 }],
      properties: [{ name: "kuasar:bundle:file", value: "bin/node" }],
    },
  ];
  const refs = new Set<string>();
  for (const c of components) {
    if (refs.has(c["bom-ref"]!)) throw new Error(`SBOM: two components share the bom-ref ${c["bom-ref"]}`);
    refs.add(c["bom-ref"]!);
  }
  const body = {
    metadata: {
      timestamp: new Date(input.epoch * 1000).toISOString(),
      tools: { components: [{ type: "application", name: "kuasar-build", version: input.version }] },
      component: {
        type: "application",
        "bom-ref": `kuasar-vmm@${input.version}`,
        name: "kuasar-vmm",
        version: input.version,
      },
    },
    components,
  };
  return {
    bomFormat: "CycloneDX",
    specVersion: SPEC_VERSION,
    serialNumber: serialOf(JSON.stringify(body)),
    version: 1,
    ...body,
  };
}
