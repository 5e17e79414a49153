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
