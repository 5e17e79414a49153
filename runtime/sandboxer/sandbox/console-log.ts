import { type FSWatcher, watch } from "node:fs";
import { open } from "node:fs/promises";

/** Polls the console log until its tail shows `seen`; gives up quietly after ms or when alive() turns false. */
export async function waitForConsole(
  file: string,
  seen: (tail: string) => boolean,
  ms: number,
  alive: () => boolean,
): Promise<void> {
  const until = Date.now() + ms;
  // inotify wakes us as soon as the VMM appends; the timeout covers file systems without it.
  let wake = () => {};
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(file, () => wake());
    watcher.on("error", () => watcher?.close());
  } catch {
    // polled below
  }
  try {
    while (Date.now() < until && alive()) {
      if (seen(await tail(file, 200))) return;
      await new Promise<void>((r) => {
        const t = setTimeout(r, 250);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  } finally {
    watcher?.close();
  }
}

/** The last lines of a console log, for errors that need the guest's side of the story. */
export async function tail(file: string, lines: number): Promise<string> {
  try {
    const fh = await open(file, "r");
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 16384);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString("utf8").split("\n").slice(-lines).join("\n");
    } finally {
      await fh.close();
    }
  } catch (err) {
    return `(unreadable: ${(err as Error).message})`;
  }
}
