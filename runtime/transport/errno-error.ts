import { getSystemErrorMap, getSystemErrorName } from "node:util";

export type ErrnoError = NodeJS.ErrnoException & { address?: string };

/** A Node-style system error (code, errno, syscall) whose message names the peer. */
export function errnoError(errno: number, syscall: string, address: string): ErrnoError {
  const code = getSystemErrorName(-errno);
  const text = getSystemErrorMap().get(-errno)?.[1];
  const err: ErrnoError = new Error(`${syscall} ${code}${text ? ` (${text})` : ""} ${address}`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  err.address = address;
  return err;
}

/** Adds the peer to an error thrown by the addon ("connect ECONNREFUSED (...)" -> "... vsock cid 3 port 1024"). */
export function withAddress(e: unknown, address: string): ErrnoError {
  const err = e as ErrnoError;
  err.message = `${err.message} ${address}`;
  err.address = address;
  return err;
}
