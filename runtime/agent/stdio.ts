import { closeSync, write } from "node:fs";
import { Socket } from "node:net";
import { Duplex, type Readable, type Writable } from "node:stream";
import tty from "node:tty";
import { ptyAddon } from "../native/pty/addon.ts";

/** A pty master as a Duplex. Reading ends (EOF) once every slave fd is closed, i.e. the process tree exited. */
export class PtyStream extends Duplex {
  /** For writes and resizes; closed only by destroy(), after any in-flight write returned. */
  readonly fd: number;
  readonly #reader: tty.ReadStream;
  #inflight: Promise<void> = Promise.resolve();

  /** Takes ownership of fd (a non-blocking pty master) and closes it when destroyed. */
  constructor(fd: number) {
    super({ allowHalfOpen: true });
    this.fd = fd;
    // tty.ReadStream reads a non-blocking master fine, but its writes would busy-loop on EAGAIN (libuv treats a
    // master it cannot reopen as a blocking tty), so writes go through fs.write. The reader gets its own dup
    // because it closes its fd by itself on EIO, which must not pull the fd from under a pending write.
    this.#reader = new tty.ReadStream(ptyAddon().dup(fd));
    this.#reader.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) this.#reader.pause();
    });
    this.#reader.on("end", () => this.push(null));
    this.#reader.on("error", (err: NodeJS.ErrnoException) => {
      // Linux reports a master whose slaves are all closed as EIO: that is the end of the output.
      if (err.code === "EIO") this.push(null);
      else this.destroy(err);
    });
  }

  override _read(): void {
    this.#reader.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const done = writeAll(this.fd, chunk, () => this.destroyed);
    this.#inflight = done.then(
      () => undefined,
      () => undefined,
    );
    done.then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#reader.destroy();
    // Close only after an in-flight fs.write returned, so it cannot hit a reused fd number.
    this.#inflight.then(() => {
      closeSync(this.fd);
      cb(err);
    });
  }

  /** Sets the terminal size; the kernel sends SIGWINCH to the foreground process group. */
  resize(cols: number, rows: number): void {
    if (this.destroyed) throw new Error("the terminal is closed");
    ptyAddon().setWinsize(this.fd, rows, cols);
  }
}

function writeAll(fd: number, data: Buffer, stopped: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let off = 0;
    let backoff = 1;
    const step = () => {
      if (off >= data.length || stopped()) return resolve();
      write(fd, data, off, data.length - off, null, (err, n) => {
        if (err) {
          // The terminal's input queue is full until the process reads: retry with a growing delay.
          if (err.code === "EAGAIN") {
            backoff = Math.min(backoff * 2, 100);
            setTimeout(step, backoff);
            return;
          }
          // EIO: the process side is gone; input for it has nowhere to go.
          if (err.code === "EIO") return resolve();
          return reject(err);
        }
        off += n;
        backoff = 1;
        step();
      });
    };
    step();
  });
}

/** The agent's ends of a non-terminal process's stdio pipes. */
export interface PipeStdio {
  stdin?: Writable;
  stdout?: Readable;
  stderr?: Readable;
}

/**
 * Real pipes for a process's stdio (a socketpair would break `echo > /dev/stdout` in the container). Returns the
 * child's fds, to hand to runc and then release(), and the agent's ends as streams.
 */
export function openStdioPipes(want: { stdin: boolean; stdout: boolean; stderr: boolean }): {
  child: { stdin?: number; stdout?: number; stderr?: number };
  streams: PipeStdio;
  /** Closes the child's ends in this process (after runc has inherited them). */
  releaseChild(): void;
} {
  const addon = ptyAddon();
  const child: { stdin?: number; stdout?: number; stderr?: number } = {};
  const streams: PipeStdio = {};
  try {
    if (want.stdin) {
      const [r, w] = addon.pipe();
      child.stdin = r;
      streams.stdin = new Socket({ fd: w, readable: false, writable: true });
    }
    for (const name of ["stdout", "stderr"] as const) {
      if (!want[name]) continue;
      const [r, w] = addon.pipe();
      child[name] = w;
      streams[name] = new Socket({ fd: r, readable: true, writable: false });
    }
  } catch (e) {
    for (const s of Object.values(streams)) s.destroy();
    for (const fd of Object.values(child)) closeSync(fd);
    throw e;
  }
  return {
    child,
    streams,
    releaseChild: () => {
      for (const fd of Object.values(child)) closeSync(fd);
    },
  };
}

/** Ends stdin so the process reads EOF: the fd is closed, not just shut down. */
export function closeWritable(w: Writable): void {
  if (w.destroyed) return;
  w.end(() => w.destroy());
}
