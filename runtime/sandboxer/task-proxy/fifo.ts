import { close, constants, fstat, open } from "node:fs";
import net from "node:net";
import { promisify } from "node:util";

const openFd = promisify(open);
const fstatFd = promisify(fstat);

/**
 * Opens one of containerd's stdio FIFOs as a socket. O_RDWR never blocks on a FIFO (no waiting for the other
 * end) and libuv treats a FIFO fd as a pipe, so net.Socket gives non-blocking, back-pressured I/O.
 * Closing stdin is signalled by containerd's CloseIO, not by EOF, which O_RDWR would hide.
 * A raw fd rather than a FileHandle: the socket owns it, nothing else may close it.
 */
export async function openFifo(path: string, direction: "read" | "write"): Promise<net.Socket> {
  const fd = await openFd(path, constants.O_RDWR | constants.O_NONBLOCK).catch((err: Error) => {
    throw new Error(`cannot open stdio fifo ${path}: ${err.message}`);
  });
  if (!(await fstatFd(fd)).isFIFO()) {
    close(fd, () => {});
    throw new Error(`stdio path ${path} is not a fifo`);
  }
  // Only one direction is used: a write-side socket must not also read, or it would steal containerd's data.
  return new net.Socket({ fd, readable: direction === "read", writable: direction === "write" });
}
