import type { DescMethod } from "@bufbuild/protobuf";
import type { TtrpcError } from "./errors.ts";
import type { MessageQueue } from "./queue.ts";
import type { CallContext } from "./server-handlers.ts";

type Kind = DescMethod["methodKind"];

/** One call on a connection: its deadline timer, its client-message queue and its abort signal. */
export class ServerStream {
  done = false;
  remoteClosed = false;
  timer: NodeJS.Timeout | undefined;
  queue: MessageQueue<unknown> | undefined;
  // created on first use: most handlers never look at their signal, and AbortControllers are not free
  private controller: AbortController | undefined;
  private abortReason: TtrpcError | undefined;

  constructor(
    readonly id: number,
    readonly desc: DescMethod,
  ) {}

  get kind(): Kind {
    return this.desc.methodKind;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  abort(reason: TtrpcError): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
}

/** The CallContext a handler gets; its signal is the stream's. */
export class ServerCallContext implements CallContext {
  constructor(
    private readonly stream: ServerStream,
    readonly metadata: ReadonlyMap<string, readonly string[]>,
    readonly service: string,
    readonly method: string,
  ) {}

  get signal(): AbortSignal {
    return this.stream.signal;
  }
}
