import { constants, type FSWatcher, watch } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import path from "node:path";
import { type Level, type Logger, logger } from "../../log/log.ts";

/**
 * A guest's serial console (kernel and vmm-task lines) copied into the daemon's own log, one line per console line
 * with the sandbox's fields, so `journalctl -u kuasar-vmm` shows what the guest said next to what the daemon did.
 * The console is attacker input: the logger escapes each line, the level is info (or the agent's own level, never
 * above warn, so a guest cannot fake a daemon error), lines are cut at maxLineBytes (also what is held in memory of a
 * line without end), and a token bucket limits each sandbox to `ratePerSec` lines (after a burst), the rest counted
 * and reported in one note per second at most. console.log itself stays as it is for `kuasar-ctl logs`.
 */
export interface GuestLogLimits {
  ratePerSec: number;
  burst: number;
  maxLineBytes: number;
}

/** A boot (SeaBIOS, the kernel, vmm-task at debug) writes some 300 lines in 2 s: the burst takes a whole one. */
export const GUEST_LOG_LIMITS: GuestLogLimits = { ratePerSec: 50, burst: 500, maxLineBytes: 4096 };

/** Without inotify (or while the file does not exist yet) the file is looked at this often. */
const POLL_MS = 1_000;
/** At most this often under a flood: one read takes all that arrived meanwhile. */
const MIN_READ_INTERVAL_MS = 50;
const NOTE_INTERVAL_MS = 1_000;
const READ_CHUNK = 64 * 1024;

/** The level a guest line is logged at: an agent line's own (`[<time> WARN  vmm_task] ...`) up to warn, else info. */
export function guestLevel(line: string): Level {
  const m = /^\[\d{4}-\d\d-\d\dT[\d:.]+Z (ERROR|WARN|INFO|DEBUG|TRACE) +\S+\] /.exec(line);
  switch (m?.[1]) {
    case "ERROR":
    case "WARN":
      return "warn";
    case "DEBUG":
      return "debug";
    case "TRACE":
      return "trace";
    default:
      return "info";
  }
}

/** A token bucket: `burst` lines at once, then `ratePerSec`. */
class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.at = now();
  }

  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.ratePerSec);
    this.at = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** A console line: its first maxLineBytes as text (a final "\r" dropped) and how many bytes after them were cut. */
export interface GuestLine {
  text: string;
  cut: number;
}

/** Splits a byte stream into lines, holding at most maxBytes of the line not yet ended. */
export class LineSplitter {
  private parts: Buffer[] = [];
  private heldBytes = 0;
  private cut = 0;

  constructor(private readonly maxBytes: number) {}

  /** Bytes held of the current, unfinished line. */
  get held(): number {
    return this.heldBytes;
  }

  /** The lines `chunk` completes. The chunk is not kept (the caller may reuse it). */
  push(chunk: Buffer): GuestLine[] {
    const lines: GuestLine[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      this.hold(chunk.subarray(start, nl));
      lines.push(this.take());
      start = nl + 1;
    }
    this.hold(chunk.subarray(start));
    return lines;
  }

  /** The unfinished line, if any (the stream ended). */
  flush(): GuestLine | undefined {
    return this.heldBytes || this.cut ? this.take() : undefined;
  }

  private hold(bytes: Buffer): void {
    const room = this.maxBytes - this.heldBytes;
    if (bytes.length > room) {
      this.cut += bytes.length - room;
      bytes = bytes.subarray(0, room);
    }
    if (!bytes.length) return;
    this.parts.push(Buffer.from(bytes));
    this.heldBytes += bytes.length;
  }

  private take(): GuestLine {
    const line = { text: Buffer.concat(this.parts).toString("utf8").replace(/\r$/, ""), cut: this.cut };
    this.parts = [];
    this.heldBytes = 0;
    this.cut = 0;
    return line;
  }
}

/**
 * Follows a console log as `tail -F` does, from the end of what it holds when following starts (an earlier start
 * attempt's or an earlier daemon's lines were forwarded then): inotify on its directory wakes it, a poll covers the
 * rest; a rotation (console.log renamed to console.log.1, a new one made) finishes the old file first; a truncation
 * starts over from the top.
 */
export class GuestLog {
  private fh?: FileHandle;
  private ino?: bigint;
  private offset = 0;
  private stopped = false;
  /** The file changed since the last read. */
  private woken = false;
  /** Waiting for a change, which then ends the wait at once. */
  private idle = false;
  private interrupt?: () => void;
  private watcher?: FSWatcher;
  private done?: Promise<void>;
  private dropped = 0;
  private lastNote = Number.NEGATIVE_INFINITY;
  private readonly buf = Buffer.alloc(READ_CHUNK);
  private readonly splitter: LineSplitter;
  private readonly bucket: TokenBucket;

  private constructor(
    private readonly file: string,
    private readonly log: Logger,
    private readonly limits: GuestLogLimits,
    private readonly now: () => number,
  ) {
    this.splitter = new LineSplitter(limits.maxLineBytes);
    this.bucket = new TokenBucket(limits.ratePerSec, limits.burst, now);
  }

  /** Starts following `file` into `log` (bound to the sandbox's fields); resolves once its start position is taken. */
  static async follow(
    file: string,
    log: Logger,
    opts: { limits?: GuestLogLimits; now?: () => number } = {},
  ): Promise<GuestLog> {
    const g = new GuestLog(file, log, opts.limits ?? GUEST_LOG_LIMITS, opts.now ?? Date.now);
    g.watch();
    await g.openFile(true);
    g.done = g.run();
    return g;
  }

  /** Forwards what the file still holds (the guest's last words, once its VMM is gone) and stops following. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.interrupt?.();
    await this.done;
  }

  private watch(): void {
    const name = path.basename(this.file);
    try {
      this.watcher = watch(path.dirname(this.file), (_event, changed) => {
        if (changed === name) this.poke();
      });
      // The sandbox directory went away (Shutdown): the poll carries on until stop().
      this.watcher.on("error", () => this.watcher?.close());
    } catch {
      // no inotify here: polled
    }
  }

  private poke(): void {
    this.woken = true;
    if (this.idle) this.interrupt?.();
  }

  private async run(): Promise<void> {
    try {
      while (!this.stopped) {
        await this.pump();
        this.note(false);
        await this.sleep();
      }
      await this.pump();
      const last = this.splitter.flush();
      if (last) this.forward(last);
      this.note(true);
    } finally {
      this.watcher?.close();
      await this.fh?.close().catch(() => undefined);
      this.fh = undefined;
    }
  }

  /** Until the file changes (or POLL_MS), but at least MIN_READ_INTERVAL_MS: inotify fires for every write. */
  private async sleep(): Promise<void> {
    await this.pause(MIN_READ_INTERVAL_MS);
    if (!this.woken) {
      this.idle = true;
      await this.pause(POLL_MS - MIN_READ_INTERVAL_MS);
      this.idle = false;
    }
    this.woken = false;
  }

  /** ms, or until stop() (or, while idle, a change) interrupts it. */
  private pause(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        this.interrupt = undefined;
        resolve();
      };
      const timer = setTimeout(end, ms);
      this.interrupt = end;
    });
  }

  /** Opens the file (not a symlink) at its end or its top; false while it does not exist. */
  private async openFile(atEnd: boolean): Promise<boolean> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.file, constants.O_RDONLY | constants.O_NOFOLLOW);
      const st = await fh.stat({ bigint: true });
      this.fh = fh;
      this.ino = st.ino;
      this.offset = atEnd ? Number(st.size) : 0;
      return true;
    } catch {
      await fh?.close().catch(() => undefined);
      return false;
    }
  }

  /** Reads what arrived, following a rotation or a truncation; an unreadable file is tried again next time. */
  private async pump(): Promise<void> {
    try {
      if (!this.fh && !(await this.openFile(false))) return;
      await this.readToEnd();
      const st = await stat(this.file, { bigint: true }).catch(() => undefined);
      if (!st) return;
      if (st.ino !== this.ino) {
        // Rotated: the old file's last bytes first (a line may go on in the new one), then the new file.
        await this.readToEnd();
        await this.fh?.close();
        this.fh = undefined;
        if (await this.openFile(false)) await this.readToEnd();
      } else if (st.size < BigInt(this.offset)) {
        const rest = this.splitter.flush();
        if (rest) this.forward(rest);
        this.offset = 0;
        await this.readToEnd();
      }
    } catch (err) {
      this.log.debug(`console log ${this.file}: ${(err as Error).message}`);
      await this.fh?.close().catch(() => undefined);
      this.fh = undefined;
    }
  }

  /** Up to what the file held when called: a guest writing on cannot keep one read going. */
  private async readToEnd(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    const end = (await fh.stat()).size;
    while (this.offset < end) {
      const { bytesRead } = await fh.read(this.buf, 0, Math.min(READ_CHUNK, end - this.offset), this.offset);
      if (!bytesRead) return;
      this.offset += bytesRead;
      for (const line of this.splitter.push(this.buf.subarray(0, bytesRead))) this.forward(line);
    }
  }

  private forward(line: GuestLine): void {
    const level = guestLevel(line.text);
    if (!this.log.enabled(level)) return;
    if (!this.bucket.take()) {
      this.dropped++;
      return;
    }
    this.note(false);
    this.log[level](line.cut ? `${line.text}... (${line.cut} more bytes cut)` : line.text);
  }

  /** The count of lines the bucket refused, at most once a second (and at the end). */
  private note(last: boolean): void {
    if (!this.dropped || (!last && this.now() - this.lastNote < NOTE_INTERVAL_MS)) return;
    this.log.warn(
      `${this.dropped} guest console lines dropped (more than ${this.limits.ratePerSec} lines/s; see ${this.file})`,
    );
    this.dropped = 0;
    this.lastNote = this.now();
  }
}

/**
 * Follows a sandbox's console into the daemon's log under target `guest`, tagged `sandbox=<id>`: `<dir>/console.log`,
 * where every driver has the VM's serial console end up.
 */
export function followGuestConsole(dir: string, sandboxId: string): Promise<GuestLog> {
  return GuestLog.follow(path.join(dir, "console.log"), logger("guest").with({ sandbox: sandboxId }));
}
