import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

export interface CallContext {
  /** Aborted (reason: a TtrpcError) on deadline, connection loss or server close. */
  readonly signal: AbortSignal;
  /** Request metadata, keys lowercased. */
  readonly metadata: ReadonlyMap<string, readonly string[]>;
  /** Service name as called on the wire, e.g. "containerd.task.v2.Task". */
  readonly service: string;
  readonly method: string;
}

/** Sends a streaming handler's output; awaiting send() applies the connection's backpressure. */
export interface StreamWriter<O extends DescMessage> {
  send(message: MessageInitShape<O>): Promise<void>;
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>> | MessageInitShape<O>;
export type ServerStreamingHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  out: StreamWriter<O>,
  ctx: CallContext,
) => Promise<void>;
export type ClientStreamingHandler<I extends DescMessage, O extends DescMessage> = (
  requests: AsyncIterable<MessageShape<I>>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;
export type BidiStreamingHandler<I extends DescMessage, O extends DescMessage> = (
  requests: AsyncIterable<MessageShape<I>>,
  out: StreamWriter<O>,
  ctx: CallContext,
) => Promise<void>;

type MethodHandler<M> = M extends {
  methodKind: infer K;
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? K extends "unary"
    ? UnaryHandler<I, O>
    : K extends "server_streaming"
      ? ServerStreamingHandler<I, O>
      : K extends "client_streaming"
        ? ClientStreamingHandler<I, O>
        : K extends "bidi_streaming"
          ? BidiStreamingHandler<I, O>
          : never
  : never;

/** Handlers keyed by the generated method names (localName, e.g. "create"); a missing one answers Unimplemented. */
export type ServiceHandlers<S extends DescService> = {
  [K in keyof S["method"]]?: MethodHandler<S["method"][K]>;
};

/** One served method: its descriptor and the handler given for it. */
export interface Registered {
  readonly desc: DescMethod;
  // biome-ignore lint/suspicious/noExplicitAny: the four handler shapes are checked by ServiceHandlers at registration
  readonly handler: (...args: any[]) => unknown;
}

/**
 * The same handlers, each waiting for `ready` before it runs: calls that arrive early queue instead of failing.
 * `ready` must settle (a rejection is the caller's to handle before it gets here, so it never fails a call).
 */
export function heldUntil<S extends DescService>(
  handlers: ServiceHandlers<S>,
  ready: Promise<void>,
): ServiceHandlers<S> {
  const out: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const h = handler as (...args: unknown[]) => unknown;
    out[name] = async (...args: unknown[]) => {
      await ready;
      return h(...args);
    };
  }
  return out as ServiceHandlers<S>;
}
