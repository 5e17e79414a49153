import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ErrnoError } from "./errno-error.ts";
import type { VsockAddress } from "./vsock-address.ts";

export type Handle = object & { readonly __brand: "VsockHandle" };

/** The addon's AF_VSOCK calls and uv_poll watcher; its other calls are typed where they are used (netns-tcp.ts). */
export interface Addon {
  watch(fd: number, cb: (status: number, events: number) => void): Handle;
  setEvents(h: Handle, events: number): void;
  setRef(h: Handle, ref: boolean): void;
  read(h: Handle, buf: Buffer): number;
  write(h: Handle, buf: Buffer): number;
  shutdown(h: Handle): void;
  socketError(h: Handle): number;
  close(h: Handle): void;
  accept(h: Handle): ({ fd: number } & Partial<VsockAddress>) | null;
  vsockListen(cid: number, port: number, backlog: number): number;
  vsockConnect(cid: number, port: number, timeoutMs: number, privileged: boolean): number;
  vsockLocalAddress(fd: number): VsockAddress;
  localCid(): number;
}

// uv_poll event bits (uv.h).
export const READABLE = 1;
export const WRITABLE = 2;

let addon: Addon | undefined;

/**
 * Addon locations, in lookup order: next to the running bundle (the guest), install-vmm's place beside an
 * installed /usr/local/bin/vmm-sandboxer, then the node-gyp build in the repo.
 */
export function vsockAddonCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [
    path.join(here, "vsock.node"),
    path.resolve(here, "../lib/kuasar-vmm/vsock.node"),
    path.resolve(here, "../native/vsock/build/Release/vsock.node"),
  ];
}

/** The addon, loaded once; netns-tcp.ts uses its TCP calls too. */
export function native(): Addon {
  if (addon) return addon;
  // An explicit KUASAR_VSOCK_ADDON is used as given: falling back would hide a misconfiguration.
  const explicit = process.env.KUASAR_VSOCK_ADDON;
  if (explicit && !existsSync(explicit)) {
    throw new Error(`KUASAR_VSOCK_ADDON=${explicit} does not exist; point it at a built vsock.node or unset it`);
  }
  const candidates = vsockAddonCandidates();
  const found = explicit || candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(
      `vsock addon not found (looked at: ${candidates.join(", ")}); build it with \`npx tsx runtime/native/build.ts\` ` +
        "(node-gyp; needs python3, make, g++) or point KUASAR_VSOCK_ADDON at a vsock.node",
    );
  }
  // process.dlopen as require() would do it, without node's module loader (compiled at first use in the guest).
  // Not runtime/native/load.ts: this module has no runtime imports, so a copy of it loads on its own (tests).
  const module = { exports: {} };
  process.dlopen(module, path.resolve(found));
  addon = module.exports as Addon;
  return addon;
}

/** This machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock). */
export function localCid(): number {
  try {
    return native().localCid();
  } catch (e) {
    const err = e as ErrnoError;
    err.message = `cannot read the local vsock CID: ${err.message}; /dev/vsock exists only with a vsock transport loaded`;
    throw err;
  }
}
