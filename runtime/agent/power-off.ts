import { execa } from "execa";
import { GUEST_SHARE } from "../contract/share.ts";
import type { ContainerManager } from "./containers.ts";
import { mountPoints, type Pid1Options, rooted } from "./mounts.ts";

/**
 * Graceful power-off: kills and deletes every container, flushes file systems, unmounts the share, then
 * exits; the C init powers the VM off whenever the agent exits.
 */
export async function shutdownGuest(
  manager: ContainerManager,
  opts: Pid1Options & { exitCode?: number } = {},
): Promise<never> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => {
    timer = setTimeout(() => {
      opts.log?.warn("containers did not stop within 15 s; powering off anyway");
      r();
    }, 15_000);
  });
  await Promise.race([manager.shutdown(), late]);
  clearTimeout(timer);
  await execa("sync", { reject: false, stdin: "ignore" });
  const share = rooted(opts, GUEST_SHARE);
  if (mountPoints().has(share)) {
    const r = await execa("umount", ["-l", share], { reject: false, all: true, stdin: "ignore" });
    if (r.failed) opts.log?.warn(`unmounting ${share} failed: ${r.all}`);
  }
  process.exit(opts.exitCode ?? 0);
}
