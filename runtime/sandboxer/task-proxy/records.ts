import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../../log/log.ts";
import { type GuestBundle, releaseGuestBundle } from "../storage/guest-bundle.ts";
import type { ShareLayout } from "../storage/share.ts";
import { writeJsonAtomic } from "../store.ts";

/** What outlives the daemon about a container: enough to stop it and free its host storage. */
export interface ContainerRecord {
  hostBundle: string;
  bundle: GuestBundle;
  namespace: string;
}

/** One file per container in <dir>/<id>/containers, a directory only the host writes. */
export class ContainerRecords {
  constructor(
    private readonly dir: string,
    private readonly share: ShareLayout,
    private readonly log: Logger,
  ) {}

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  async save(id: string, rec: ContainerRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.file(id), rec);
  }

  async remove(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
  }

  /** Every readable record with its container id; an unreadable one is removed (its mounts go with the sandbox). */
  async list(): Promise<Array<{ id: string; rec: ContainerRecord }>> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: Array<{ id: string; rec: ContainerRecord }> = [];
    for (const name of names.filter((n) => n.endsWith(".json"))) {
      const file = path.join(this.dir, name);
      try {
        const rec = JSON.parse(await readFile(file, "utf8")) as ContainerRecord;
        if (!Array.isArray(rec.bundle?.storage)) throw new Error("no storage list");
        if (rec.bundle.disks !== undefined && !Array.isArray(rec.bundle.disks)) throw new Error("disks is not a list");
        out.push({ id: name.slice(0, -".json".length), rec });
      } catch (err) {
        this.log.warn(`container record ${file} is unreadable (${(err as Error).message}); removing it`);
        await rm(file, { force: true });
      }
    }
    return out;
  }

  /** Frees one recorded container's storage, then forgets it. */
  async release(id: string, rec: ContainerRecord): Promise<void> {
    await releaseGuestBundle(this.share, rec.bundle).catch((e: Error) =>
      this.log.warn(`release ${id}: ${e.message}`, { container: id }),
    );
    await this.remove(id);
  }

  /** Frees the storage of every recorded container, whatever state the sandbox is in. */
  async releaseAll(): Promise<void> {
    for (const { id, rec } of await this.list()) await this.release(id, rec);
  }
}
