import type { HypervisorKind } from "../hypervisor/names.ts";
import { vmmOf } from "../hypervisor/registry.ts";
import type { Config } from "./schema.ts";

/**
 * Rules between keys, the common ones and then the VMM's own (its descriptor's); defaults the user did not touch give
 * way to the keys they did set.
 */
export function crossCheck(config: Config, kind: HypervisorKind, explicit: Set<string>, problems: string[]): void {
  const h = config.hypervisor;
  const set = (k: string) => explicit.has(`hypervisor.${k}`);

  if (h.image_path !== "" && h.initrd_path !== "") {
    if (set("initrd_path") && !set("image_path")) h.image_path = "";
    else if (set("image_path") && !set("initrd_path")) h.initrd_path = "";
    else {
      problems.push(
        'hypervisor.image_path and hypervisor.initrd_path are both set: the guest boots from one; set the other to ""',
      );
    }
  }
  if (h.image_path === "" && h.initrd_path === "") {
    problems.push(
      "hypervisor.image_path and hypervisor.initrd_path are both empty: set one (the guest root filesystem)",
    );
  }
  vmmOf(kind).config.crossCheck(config, set, problems);
}
