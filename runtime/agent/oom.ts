import { EventEmitter } from "node:events";
import { type FSWatcher, watch } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { CgroupPaths } from "../cgroups/stats.ts";

export interface OomEvent {
  containerId: string;
}

interface Watched {
  file: string;
  last: bigint;
  watcher?: FSWatcher;
  checking?: Promise<void>;
}

/**
 * Reports OOM kills per container from the oom_kill counter of its memory cgroup: memory.events on v2
 * (inotify tells when it changes), memory.oom_control on v1 (polled: its eventfd notification needs a native
 * eventfd). Emits 'oom' with an OomEvent each time the counter grows.
 */
export class OomWatcher extends EventEmitter<{ oom: [OomEvent] }> {
  readonly #watched = new Map<string, Watched>();
  readonly #pollMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: { pollMs?: number } = {}) {
    super();
    this.#pollMs = opts.pollMs ?? 1000;
  }

  /** Starts watching; a cgroup without the memory controller cannot report OOM and is skipped. */
  async add(containerId: string, cgroup: CgroupPaths): Promise<void> {
    const file =
      cgroup.version === 2
        ? path.join(cgroup.dir, "memory.events")
        : cgroup.dirs.memory && path.join(cgroup.dirs.memory, "memory.oom_control");
    if (!file) return;
    const last = await readOomKills(file);
    if (last === undefined) return;
    const w: Watched = { file, last };
    this.#watched.set(containerId, w);
    if (cgroup.version === 2) {
      try {
        const watcher = watch(file, () => void this.check(containerId));
        watcher.on("error", () => {
          // The cgroup went away or inotify failed: polling covers whatever is left.
          watcher.close();
          w.watcher = undefined;
          this.#startPolling();
        });
        w.watcher = watcher;
        return;
      } catch {
        // No inotify on this file system: poll instead.
      }
    }
    this.#startPolling();
  }

  /** Reads the counter now and emits for any increase (call it when a container's init exits). */
  check(containerId: string): Promise<void> {
    const w = this.#watched.get(containerId);
    if (!w) return Promise.resolve();
    // One read at a time per container, so a burst of inotify events cannot emit twice for one kill.
    w.checking = (w.checking ?? Promise.resolve()).then(async () => {
      const n = await readOomKills(w.file);
      if (n === undefined || n <= w.last) return;
      w.last = n;
      if (this.#watched.get(containerId) === w) this.emit("oom", { containerId });
    });
    return w.checking;
  }

  /** Checks a last time, then stops watching the container. */
  async remove(containerId: string): Promise<void> {
    await this.check(containerId);
    const w = this.#watched.get(containerId);
    w?.watcher?.close();
    this.#watched.delete(containerId);
    if (![...this.#watched.values()].some((x) => !x.watcher) && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  close(): void {
    for (const w of this.#watched.values()) w.watcher?.close();
    this.#watched.clear();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #startPolling(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      for (const [id, w] of this.#watched) if (!w.watcher) void this.check(id);
    }, this.#pollMs);
    this.#timer.unref();
  }
}

/** The oom_kill counter of memory.events / memory.oom_control; undefined once the cgroup is gone. */
async function readOomKills(file: string): Promise<bigint | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return undefined;
  }
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? BigInt(m[1]!) : undefined;
}
