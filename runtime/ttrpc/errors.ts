import type { Any } from "@bufbuild/protobuf/wkt";

/** Status codes carried in ttrpc responses; the numbers are gRPC's. */
export enum Code {
  OK = 0,
  Canceled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  DataLoss = 15,
  Unauthenticated = 16,
}

/** An RPC failure: what the peer (or this side) reported as a non-OK status. */
export class TtrpcError extends Error {
  override readonly name = "TtrpcError";

  constructor(
    readonly code: Code,
    message: string,
    readonly details: readonly Any[] = [],
  ) {
    super(message);
  }

  /** The code's name, e.g. "NotFound" (or the number when it has none). */
  get codeName(): string {
    return Code[this.code] ?? String(this.code);
  }

  override toString(): string {
    return `TtrpcError [${this.codeName}]: ${this.message}`;
  }
}

const errnoCodes: Record<string, Code> = {
  ENOENT: Code.NotFound,
  EEXIST: Code.AlreadyExists,
  EACCES: Code.PermissionDenied,
  EPERM: Code.PermissionDenied,
  EINVAL: Code.InvalidArgument,
  ETIMEDOUT: Code.DeadlineExceeded,
};

/**
 * Turns whatever a handler threw into a TtrpcError. Node errno errors map like
 * Go's os.IsNotExist & co. do in containerd/ttrpc, so callers see NotFound for a
 * missing file rather than Unknown.
 */
export function toTtrpcError(err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  if (err instanceof Error) {
    if (err.name === "AbortError") return new TtrpcError(Code.Canceled, err.message);
    const errno = (err as NodeJS.ErrnoException).code;
    const code = errno === undefined ? undefined : errnoCodes[errno];
    return new TtrpcError(code ?? Code.Unknown, err.message);
  }
  return new TtrpcError(Code.Unknown, String(err));
}
