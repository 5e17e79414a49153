import { STARTUP_DATA_OFFSET } from "../contract/startup-data.ts";
import type { Logger } from "../log/log.ts";
import { heapAddon } from "../native/ns/heap.ts";
import { uptimeMs } from "./uptime.ts";

/**
 * Maps the image's startup data file over node's private copy of the V8 startup data (contract/startup-data.ts):
 * 3.3 MiB that every guest otherwise holds in its own RAM, now pages of the image, which the DAX NVDIMM shares from
 * the host's page cache. V8 reads the data again only to make a new context. The addon compares every byte first,
 * on a thread of idle priority, so the host's first calls are not kept waiting. Memory is not worth failing over: a
 * copy not found (another node, another malloc) is logged and left as it is.
 */
export async function shareStartupData(file: string, log: Logger): Promise<void> {
  try {
    const started = uptimeMs();
    const bytes = await heapAddon().mapFileOverCopy(file, STARTUP_DATA_OFFSET);
    const ms = Math.round(uptimeMs() - started);
    if (bytes > 0)
      log.info(
        `startup data: ${(bytes / 1048576).toFixed(1)} MiB of node's copy now mapped from ${file} (${ms} ms at idle priority)`,
      );
    else log.warn(`startup data: node's copy of ${file} was not found in memory; it stays private`);
  } catch (err) {
    log.warn(`startup data: ${(err as Error).message}; node's copy stays private`);
  }
}
