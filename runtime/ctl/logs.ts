import { open, stat } from "node:fs/promises";
import type { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";

const POLL_MS = 250;

async function readRange(file: string, from: number, to: number): Promise<Buffer> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(to - from);
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The offset where the last n lines of buf begin (a final newline does not start an empty line). */
export function tailOffset(buf: Buffer, n: number): number {
  let end = buf.length;
  if (end > 0 && buf[end - 1] === 10) end--;
  let seen = 0;
  for (let i = end - 1; i >= 0; i--) {
    if (buf[i] === 10 && ++seen === n) return i + 1;
  }
  return 0;
}

export interface LogOptions {
  /** Keep printing what is appended until the file goes away or signal aborts. */
  follow: boolean;
  /** Only the last n lines of what is there now. */
  lines?: number;
  signal?: AbortSignal;
}

/**
 * Prints a log file, optionally following it. Following ends when the file is removed (the sandbox was shut down)
 * and starts over when it shrinks (it was truncated).
 */
export async function printLog(file: string, out: Writable, opts: LogOptions): Promise<void> {
  let size = (await stat(file)).size;
  const now = await readRange(file, 0, size);
  out.write(opts.lines === undefined ? now : now.subarray(tailOffset(now, opts.lines)));
  let pos = size;
  while (opts.follow && !opts.signal?.aborted) {
    await sleep(POLL_MS, undefined, opts.signal ? { signal: opts.signal } : {}).catch(() => undefined);
    const st = await stat(file).catch(() => undefined);
    if (!st) return;
    size = st.size;
    if (size < pos) pos = 0;
    if (size > pos) {
      out.write(await readRange(file, pos, size));
      pos = size;
    }
  }
}
