import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { pack as tarPack } from "tar-stream";
import { type LayerEntry, normalizeEntries, packEntries } from "../installer-image/oci.ts";
import { MissingToolError } from "../lib/tools.ts";

/**
 * zstd's settings, part of what makes the bundle's bytes: one thread (-T1, the same frames whatever the machine),
 * and a 128 MiB window (--long=27), which `zstd -d` and so `tar -xf` still read without extra flags. Measured on
 * this bundle (290 MB of tar): -19 gives 104 MB in 190 s; -9 --long=27 gives 84 MB in 7 s, because the window
 * then reaches from the host's node to the guest image's node (see NEXT_TO).
 */
export const ZSTD_ARGS = ["-9", "--long=27", "-T1", "--no-progress", "-q", "-c"];

/**
 * Entries that go right before another rather than in path order: the guest image carries a node built like the
 * host's, and the two only share a compression window when they are adjacent in the stream.
 */
export const NEXT_TO: Record<string, string> = { "bin/node": "bin/kuasar.img" };

/** Entries sorted by path (parents added, duplicates refused), then each NEXT_TO file moved before its neighbour. */
export function archiveOrder(entries: LayerEntry[], nextTo: Record<string, string> = NEXT_TO): LayerEntry[] {
  let out = normalizeEntries(entries);
  for (const [mover, target] of Object.entries(nextTo)) {
    const m = out.find((e) => e.path === mover);
    if (!m || !out.some((e) => e.path === target)) continue;
    out = out.filter((e) => e !== m);
    out.splice(
      out.findIndex((e) => e.path === target),
      0,
      m,
    );
  }
  return out;
}

/**
 * A reproducible .tar.zst: entries in archiveOrder, every mtime the epoch, owner root:root (0:0), modes as given,
 * compressed by the zstd CLI with ZSTD_ARGS.
 */
export async function writeTarZst(entries: LayerEntry[], out: string, epoch: number): Promise<void> {
  const file = await open(out, "w");
  try {
    const zstd = spawn("zstd", ZSTD_ARGS, { stdio: ["pipe", file.fd, "pipe"] });
    let stderr = "";
    zstd.stderr!.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const exited = new Promise<void>((resolve, reject) => {
      zstd.on("error", (err: NodeJS.ErrnoException) =>
        reject(err.code === "ENOENT" ? new MissingToolError("zstd", "zstd") : err),
      );
      zstd.on("close", (code, signal) =>
        code === 0
          ? resolve()
          : reject(
              new Error(
                `zstd ${ZSTD_ARGS.join(" ")} ${signal ? `was killed by ${signal}` : `exited with ${code}`}: ${stderr.trim()}`,
              ),
            ),
      );
    });
    const pack = tarPack();
    const ordered = archiveOrder(entries);
    await Promise.all([
      packEntries(pack, ordered, new Date(epoch * 1000), { uname: "root", gname: "root" }),
      pipeline(pack, zstd.stdin!),
      exited,
    ]);
  } finally {
    await file.close();
  }
}
