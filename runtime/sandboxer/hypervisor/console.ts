import { constants } from "node:fs";
import { type FileHandle, open, rename } from "node:fs/promises";
import net from "node:net";
import type { Logger } from "../../log/log.ts";

/** Where a VM's serial console is read from and kept. */
export interface ConsoleSpec {
  /** The VMM's console socket: the VMM listens, the daemon connects. */
  socket: string;
  /** Appended to; renamed to `<file>.1` (replacing the one before) before it would grow past maxBytes. */
  file: string;
  maxBytes: number;
}

/** Retry interval while the VMM has not created its socket yet, so little of an early boot is missed. */
const FIRST_CONNECT_MS = 20;
/** How long the fast retries last: as long as a VMM is given to answer on its control socket. */
const FIRST_CONNECT_WINDOW_MS = 15_000;
/** Retry interval after that, and after the VMM closed the connection. */
const RECONNECT_MS = 1_000;
const OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

/**
 * Copies a VM's serial console from the VMM's socket into a size-capped file with one rotated predecessor, so a
 * guest that floods its console costs at most 2 x maxBytes of the host's /run. Reads pull one chunk at a time and
 * the next read waits for the file write, so a guest that writes faster than the disk takes is slowed down by its
 * VMM (QEMU and StratoVirt hold the UART busy, cloud-hypervisor keeps a bounded ring) instead of buffered here.
 * The VMM drops output while no one is connected (daemon restarts), and the reader reconnects whenever the
 * connection ends, until stop().
 */
export class ConsoleCapture {
  private stopped = false;
  private sock?: net.Socket;
  /** Settles when the current connection has been read to its end. */
  private pumping?: Promise<void>;
  private wake?: () => void;
  private fh?: FileHandle;
  private size = 0;
  private writeFailed = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly spec: ConsoleSpec,
    private readonly log: Logger,
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    const started = Date.now();
    let announced = false;
    // There from the start, as when the VMM wrote it: waiters can watch it and kuasar-ctl can show it.
    await this.openFile().catch((err: Error) =>
      this.log.warn(`console: cannot open ${this.spec.file}: ${err.message}`),
    );
    while (!this.stopped) {
      const sock = await connect(this.spec.socket).catch((err: NodeJS.ErrnoException) => {
        if (!announced && Date.now() - started > FIRST_CONNECT_WINDOW_MS) {
          this.log.warn(`console: cannot connect to ${this.spec.socket} (${err.code ?? err.message}); retrying`);
          announced = true;
        }
        return undefined;
      });
      if (sock && this.stopped) sock.destroy();
      else if (sock) {
        announced = false;
        this.sock = sock;
        this.pumping = this.pump(sock);
        await this.pumping;
        this.sock = undefined;
      }
      if (this.stopped) break;
      const fast = !sock && Date.now() - started < FIRST_CONNECT_WINDOW_MS;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, fast ? FIRST_CONNECT_MS : RECONNECT_MS);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
  }

  /** Appends everything the connection delivers; the socket is only read again once a chunk is on disk. */
  private async pump(sock: net.Socket): Promise<void> {
    try {
      for await (const chunk of sock) await this.append(chunk as Buffer);
    } catch (err) {
      if (!this.stopped) this.log.debug(`console: ${this.spec.socket}: ${(err as Error).message}`);
    } finally {
      sock.destroy();
    }
  }

  private async append(chunk: Buffer): Promise<void> {
    try {
      for (let off = 0; off < chunk.length; ) {
        if (!this.fh) await this.openFile();
        if (this.size >= this.spec.maxBytes) await this.rotate();
        const n = Math.min(chunk.length - off, this.spec.maxBytes - this.size);
        const { bytesWritten } = await this.fh!.write(chunk, off, n);
        this.size += bytesWritten;
        off += bytesWritten;
      }
      this.writeFailed = false;
    } catch (err) {
      // The chunk is dropped rather than the guest stalled; the file is opened afresh for the next one.
      if (!this.writeFailed) this.log.warn(`console: cannot write ${this.spec.file}: ${(err as Error).message}`);
      this.writeFailed = true;
      await this.fh?.close().catch(() => undefined);
      this.fh = undefined;
    }
  }

  private async openFile(): Promise<void> {
    this.fh = await open(this.spec.file, OPEN_FLAGS, 0o640);
    this.size = (await this.fh.stat()).size;
  }

  private async rotate(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
    await rename(this.spec.file, `${this.spec.file}.1`);
    await this.openFile();
  }

  /**
   * Stops reading and closes the file. drainMs > 0 first lets the current connection deliver what it holds: after
   * the VMM exited that is its last output (a guest panic), already followed by the end of the stream.
   */
  async stop(drainMs = 0): Promise<void> {
    this.stopped = true;
    this.wake?.();
    if (this.pumping && drainMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.pumping, new Promise((r) => (timer = setTimeout(r, drainMs)))]);
      clearTimeout(timer);
    }
    this.sock?.destroy();
    await this.done;
  }
}

/** A connected socket, or the error that said why not (ENOENT before the VMM created it, ECONNREFUSED after it left). */
function connect(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socket);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}
