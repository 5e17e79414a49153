// Which npm packages ship: those whose files esbuild put into a shipped program. An unminified esbuild bundle
// opens every module it holds with a comment naming its path ("// node_modules/@grpc/grpc-js/build/src/index.js"),
// so the programs themselves say what they carry; package-lock.json says which version that is.

export interface LockPackage {
  /** The lock's key: node_modules/a or node_modules/a/node_modules/b (a nested copy). */
  key: string;
  name: string;
  version: string;
  /** Subresource integrity, e.g. "sha512-<base64>". */
  integrity?: string;
  license?: string;
  /** Only a devDependency (of the root or of another dev package) needs it. */
  dev: boolean;
}

interface LockFile {
  lockfileVersion?: number;
  packages?: Record<string, { version?: string; integrity?: string; license?: string; dev?: boolean; name?: string }>;
}

/** The packages of a package-lock.json (lockfileVersion 2 or 3), by key. */
export function readLock(text: string, file = "package-lock.json"): Map<string, LockPackage> {
  const lock = JSON.parse(text) as LockFile;
  if (!lock.packages || (lock.lockfileVersion ?? 1) < 2) {
    throw new Error(
      `${file} has no "packages" map (lockfileVersion ${lock.lockfileVersion}); regenerate it with npm 7 or newer`,
    );
  }
  const out = new Map<string, LockPackage>();
  for (const [key, p] of Object.entries(lock.packages)) {
    if (!key.startsWith("node_modules/")) continue;
    if (!p.version) throw new Error(`${file}: ${key} has no version`);
    const name = p.name ?? key.slice(key.lastIndexOf("node_modules/") + "node_modules/".length);
    out.set(key, { key, name, version: p.version, integrity: p.integrity, license: p.license, dev: p.dev === true });
  }
  return out;
}

/** Module paths esbuild wrote into a bundle, one per "// <path>" line that opens a module. */
function moduleComments(text: string): string[] {
  return [...text.matchAll(/^\/\/ ((?:[\w@.+-]+\/)*[\w@.+-]+\.(?:[cm]?js|json|ts))$/gm)].map((m) => m[1]!);
}

/**
 * The lock packages that the bundles hold, sorted by key. A bundle without any module comment (minified, or not
 * esbuild's) cannot tell, and is refused rather than counted as holding nothing.
 */
export function shippedPackages(
  bundles: { name: string; text: string }[],
  lock: Map<string, LockPackage>,
): LockPackage[] {
  const found = new Map<string, LockPackage>();
  for (const b of bundles) {
    const modules = moduleComments(b.text);
    if (modules.length === 0) {
      throw new Error(
        `${b.name} has no esbuild module comments ("// path/of/module.js"), so the SBOM cannot tell which npm packages it holds; bundle it unminified`,
      );
    }
    for (const module of modules) {
      // Relative to esbuild's working directory: node_modules/..., or ../../repo/node_modules/... when
      // node_modules is a link to another tree.
      const at = module.indexOf("node_modules/");
      if (at < 0) continue;
      const m = module.slice(at);
      // The deepest lock key the path lies under: node_modules/a/node_modules/b/x.js is b's nested copy.
      const parts = m.split("/");
      let key: string | undefined;
      for (let i = parts.length - 1; i > 0; i--) {
        const prefix = parts.slice(0, i).join("/");
        if (lock.has(prefix)) {
          key = prefix;
          break;
        }
      }
      if (!key) throw new Error(`${b.name} holds ${m}, which no package in package-lock.json owns; run npm ci`);
      found.set(key, lock.get(key)!);
    }
  }
  return [...found.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
