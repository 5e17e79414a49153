import { RuncError } from "./runc.ts";

/** What the service layer maps to a gRPC status code. */
export type TaskErrorCode = "NotFound" | "AlreadyExists" | "FailedPrecondition" | "InvalidArgument" | "Internal";

export class TaskError extends Error {
  readonly code: TaskErrorCode;
  constructor(code: TaskErrorCode, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = "TaskError";
    this.code = code;
  }
}

/** A failure of `what` as a TaskError: runc's "container does not exist" is NotFound, anything else Internal. */
export function asTaskError(e: unknown, what: string): TaskError {
  if (e instanceof TaskError) return e;
  if (e instanceof RuncError && e.notExist) return new TaskError("NotFound", `${what}: ${e.message}`, { cause: e });
  return new TaskError("Internal", `${what}: ${(e as Error).message}`, { cause: e });
}
