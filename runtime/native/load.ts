import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// In a bundle this module's directory is the bundle's: the guest's addons are installed beside vmm-task, the host's
// in install-vmm's lib directory beside an installed /usr/local/bin/vmm-sandboxer.
const here = path.dirname(fileURLToPath(import.meta.url));
const loaded = new Map<string, unknown>();

/**
 * Loads (once) the N-API addon runtime/native/<name>: the file $envVar names (which must then exist: falling back
 * would hide a misconfiguration), else <name>.node beside the running code or in ../lib/kuasar-vmm, else the
 * node-gyp build.
 */
export function loadAddon<T>(name: string, envVar: string): T {
  const cached = loaded.get(name);
  if (cached) return cached as T;
  const explicit = process.env[envVar];
  if (explicit && !existsSync(explicit)) {
    throw new Error(`${envVar}=${explicit} does not exist; point it at a built ${name}.node or unset it`);
  }
  const candidates = [
    path.join(here, `${name}.node`),
    path.resolve(here, "../lib/kuasar-vmm", `${name}.node`),
    path.join(here, name, "build", "Release", `${name}.node`),
  ];
  const found = explicit || candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(
      `${name} addon not found (looked at: ${candidates.join(", ")}); build it with \`npx tsx runtime/native/build.ts\` ` +
        `(node-gyp; needs python3, make, gcc) or point ${envVar} at a ${name}.node`,
    );
  }
  const addon = openAddon<T>(found);
  loaded.set(name, addon);
  return addon;
}

/**
 * An addon file's exports, through process.dlopen as require() would, without the module loader: in the guest
 * that loader's own code is compiled at first use, which cost the agent's start a few ms natively per addon.
 */
export function openAddon<T>(file: string): T {
  const module = { exports: {} };
  process.dlopen(module, path.resolve(file));
  return module.exports as T;
}
