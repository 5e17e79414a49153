import { once } from "node:events";
import { type FileHandle, open, stat } from "node:fs/promises";
import type { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { StreamEscaper } from "../text/escape.ts";

const POLL_MS = 250;
/** Bytes read at a time: what the whole log never is, in memory. */
const CHUNK_BYTES = 64 * 1024;

export interface LogOptions {
  /** Keep printing what is appended, across rotations, until the file goes away or signal aborts. */
  follow: boolean;
  /** Only the last n lines of what is there now. */
  lines?: number;
  /** The bytes as they are; otherwise control characters are escaped (guest output must not drive the terminal). */
  raw?: boolean;
  signal?: AbortSignal;
  /** Read size; tests make it small. */
  chunkBytes?: number;
}

/** One file's bytes [0, size) as they were when the log was opened. */
interface Part {
  fh: FileHandle;
  size: number;
}

/** Writes bytes to out, escaped unless raw, waiting whenever out is full. */
class Printer {
  private readonly escaper?: StreamEscaper;

  constructor(
    private readonly out: Writable,
    raw: boolean,
  ) {
    if (!raw) this.escaper = new StreamEscaper({ multiline: true });
  }

  async write(bytes: Buffer): Promise<void> {
    const data = this.escaper ? this.escaper.write(bytes) : bytes;
    if (data.length > 0 && !this.out.write(data)) await once(this.out, "drain");
  }

  end(): void {
    const rest = this.escaper?.end();
    if (rest) this.out.write(rest);
  }
}

/** Copies fh's bytes [from, to) to the printer, one chunk at a time. Returns where it stopped (EOF may come first). */
async function copy(fh: FileHandle, from: number, to: number, p: Printer, chunk: number): Promise<number> {
  let pos = from;
  while (pos < to) {
    // A buffer per chunk: out may still hold the previous one.
    const buf = Buffer.allocUnsafe(Math.min(chunk, to - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    await p.write(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return pos;
}

/**
 * Where the last n lines of parts (one stream, oldest part first) begin, as [part index, offset]; read backwards
 * one chunk at a time. A final newline does not start an empty line.
 */
async function tailStart(parts: Part[], n: number, chunk: number): Promise<[number, number]> {
  const end: [number, number] = [parts.length, 0];
  if (n === 0) return end;
  const buf = Buffer.alloc(chunk);
  let seen = 0;
  let last = true;
  for (let i = parts.length - 1; i >= 0; i--) {
    for (let to = parts[i]!.size; to > 0; ) {
      const from = Math.max(0, to - chunk);
      const { bytesRead } = await parts[i]!.fh.read(buf, 0, to - from, from);
      for (let k = bytesRead - 1; k >= 0; k--) {
        if (buf[k] !== 10) {
          last = false;
          continue;
        }
        // The newline that ends the log is not a line of its own.
        if (last) {
          last = false;
          continue;
        }
        if (++seen === n) return [i, from + k + 1];
      }
      to = from;
    }
  }
  return [0, 0];
}

async function openIfThere(file: string): Promise<FileHandle | undefined> {
  return open(file, "r").catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
}

/**
 * Prints a log and the one it was rotated from (`<file>.1`, printed first), in bounded chunks, optionally only its
 * last lines, optionally following it. Following survives rotation (the file renamed away and a new one created),
 * starts over when the file shrinks (truncated) and ends when the file is removed (the sandbox was shut down).
 */
export async function printLog(file: string, out: Writable, opts: LogOptions): Promise<void> {
  const chunk = opts.chunkBytes ?? CHUNK_BYTES;
  const p = new Printer(out, Boolean(opts.raw));
  // The current file first: if it is rotated in between, the older one opened second is the same file, not skipped.
  let cur = await open(file, "r");
  const prev = await openIfThere(`${file}.1`);
  try {
    const curStat = await cur.stat();
    const parts: Part[] = [];
    if (prev) {
      const s = await prev.stat();
      if (s.ino !== curStat.ino) parts.push({ fh: prev, size: s.size });
    }
    parts.push({ fh: cur, size: curStat.size });
    const [first, offset] = opts.lines === undefined ? [0, 0] : await tailStart(parts, opts.lines, chunk);
    for (let i = first; i < parts.length; i++) {
      await copy(parts[i]!.fh, i === first ? offset : 0, parts[i]!.size, p, chunk);
    }
    let pos = curStat.size;
    while (opts.follow && !opts.signal?.aborted) {
      await sleep(POLL_MS, undefined, opts.signal ? { signal: opts.signal } : {}).catch(() => undefined);
      const now = await stat(file).catch(() => undefined);
      const mine = await cur.stat();
      if (now && now.ino === mine.ino) {
        if (mine.size < pos) pos = 0;
        pos = await copy(cur, pos, mine.size, p, chunk);
        continue;
      }
      // Renamed away or removed: what was appended to it before that still belongs to the log.
      pos = await copy(cur, pos, mine.size, p, chunk);
      const next = now && (await openIfThere(file));
      if (next) {
        await cur.close();
        cur = next;
        pos = await copy(cur, 0, (await cur.stat()).size, p, chunk);
      } else if (mine.nlink === 0) {
        return;
      }
      // Otherwise it was renamed and its successor is not there yet.
    }
  } finally {
    p.end();
    await cur.close();
    await prev?.close();
  }
}
