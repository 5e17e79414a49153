/** A build failure, prefixed with the stage it happened in. */
export class StageError extends Error {
  constructor(
    readonly stage: string,
    /** The message without the stage prefix. */
    readonly detail: string,
  ) {
    super(`[${stage}] ${detail}`);
    this.name = "StageError";
  }
}
