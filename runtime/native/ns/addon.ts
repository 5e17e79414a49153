import { loadAddon } from "../load.ts";

/** runtime/native/ns/ns.c. Errors carry the errno name as code and say what failed on which file. */
export interface NsAddon {
  /**
   * create: new ipc+uts namespaces bind-mounted on the two existing files; otherwise joins the ones mounted there.
   * Then sets the hostname ("" keeps it) and writes each sysctl (flat [path, value, ...]) from inside them.
   */
  setup(ipcFile: string, utsFile: string, create: boolean, hostname: string, sysctls: string[]): void;
  /** Unmounts a namespace bind mount. */
  unmount(file: string): void;
}

export function nsAddon(): NsAddon {
  return loadAddon<NsAddon>("ns", "KUASAR_NS_ADDON");
}
