/** A build failure, prefixed with the stage it happened in. */
export class StageError extends Error {
  constructor(
    readonly stage: string,
    message: string,
  ) {
    super(`[${stage}] ${message}`);
    this.name = "StageError";
  }
}
