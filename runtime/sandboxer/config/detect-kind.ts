import path from "node:path";
import { HYPERVISORS, type HypervisorKind } from "../hypervisor/names.ts";
import { vmmOf } from "../hypervisor/registry.ts";
import type { Raw } from "./value.ts";

const quoted = HYPERVISORS.map((hv) => JSON.stringify(hv));
const TYPES = `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}`;
/** Binary keys only one VMM has (qemu_path): setting one says which VMM the file is for. */
const OWN_BINARY_KEYS = HYPERVISORS.map((hv) => [hv, vmmOf(hv).binaryKey] as const).filter(([, k]) => k !== "path");

/**
 * Which hypervisor a file without [hypervisor] type is for: a binary key only one VMM has (qemu_path), else the VMM
 * that path names.
 */
export function detectKind(h: Raw, problems: string[]): HypervisorKind | undefined {
  if (h.type !== undefined) return undefined; // validated with the other keys
  const byPath = (p: unknown): HypervisorKind | undefined => {
    if (typeof p !== "string") return undefined;
    const base = path.basename(p);
    return HYPERVISORS.find((hv) => base.includes(hv));
  };
  const fromPath = byPath(h.path);
  const own = OWN_BINARY_KEYS.find(([, key]) => h[key] !== undefined);
  if (own) {
    const [kind, key] = own;
    if (fromPath && fromPath !== kind) {
      problems.push(
        `hypervisor.${key} and hypervisor.path = ${JSON.stringify(h.path)} name different hypervisors: ` +
          `set [hypervisor] type = ${TYPES}`,
      );
      return undefined;
    }
    return kind;
  }
  if (fromPath) return fromPath;
  problems.push(
    `hypervisor: cannot tell which hypervisor this file is for: set [hypervisor] type = ${TYPES} ` +
      `(or ${OWN_BINARY_KEYS.map(([, k]) => `${k}, or `).join("")}a path naming the VMM binary)`,
  );
  return undefined;
}
