import { EventEmitter } from "node:events";
import { type CgroupPaths, type CgroupStats, cgroupOf, readCgroupStats } from "../cgroups/stats.ts";
import type { Logger } from "../log/log.ts";
import { asTaskError, TaskError } from "./errors.ts";
import { type OomEvent, OomWatcher } from "./oom.ts";

/**
 * Each container's cgroup, found from its init's pid: where its stats are read and whose OOM kills are reported.
 * Emits 'oom' (OomEvent).
 */
export class ContainerCgroups extends EventEmitter<{ oom: [OomEvent] }> {
  readonly #paths = new Map<string, CgroupPaths>();
  readonly #oom: OomWatcher;
  readonly #log: Logger;

  constructor(opts: { oomPollMs: number; log: Logger }) {
    super();
    this.#log = opts.log;
    this.#oom = new OomWatcher({ pollMs: opts.oomPollMs });
    this.#oom.on("oom", (ev) => this.emit("oom", ev));
  }

  /** Finds the cgroup of the container's init and watches it for OOM kills; a failure only costs those. */
  async track(id: string, initPid: number): Promise<void> {
    try {
      const cgroup = await cgroupOf(initPid);
      this.#paths.set(id, cgroup);
      await this.#oom.add(id, cgroup);
    } catch (e) {
      this.#log.warn(`container ${id}: cannot find its cgroup (${(e as Error).message}); no stats or OOM events`, {
        container: id,
      });
    }
  }

  async untrack(id: string): Promise<void> {
    this.#paths.delete(id);
    await this.#oom.remove(id);
  }

  /** Reports an OOM kill of the container not reported yet: call it before announcing its init's exit. */
  checkOom(id: string): Promise<void> {
    return this.#oom.check(id);
  }

  /** Raw numbers from the container's cgroup (v1 or v2, see runtime/cgroups/stats.ts). */
  async stats(id: string): Promise<CgroupStats> {
    const cgroup = this.#paths.get(id);
    if (!cgroup) throw new TaskError("FailedPrecondition", `container ${id}: its cgroup is unknown; no stats`);
    try {
      return await readCgroupStats(cgroup);
    } catch (e) {
      throw asTaskError(e, `container ${id}: stats`);
    }
  }

  close(): void {
    this.#oom.close();
  }
}
