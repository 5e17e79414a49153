import type { Duplex } from "node:stream";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Channel, type ChannelHandler } from "./channel.ts";
import { byteLength, decodeMessage, encodeMessage } from "./codec.ts";
import { decodeResponse, encodeRequest, encodeRoute, statusError } from "./envelope.ts";
import { Code, TtrpcError } from "./errors.ts";
import { Flag, MAX_DATA_LENGTH, MessageType } from "./frame.ts";
import { MessageQueue } from "./queue.ts";

export interface CallOptions {
  /** Cancels the call locally (ttrpc has no cancel frame: the server finishes on its own). */
  signal?: AbortSignal;
  /** Deadline sent to the server as timeout_nano and enforced here (DeadlineExceeded). */
  timeoutMs?: number;
  /** Request metadata; keys are lowercased. */
  metadata?: Record<string, string | readonly string[]>;
}

export interface ClientStreamingCall<I extends DescMessage, O extends DescMessage> {
  /** Resolves once the message is queued below the connection's high-water mark. */
  send(message: MessageInitShape<I>): Promise<void>;
  /** Closes the client side and waits for the server's single response. */
  closeAndReceive(): Promise<MessageShape<O>>;
}

export interface BidiStreamingCall<I extends DescMessage, O extends DescMessage>
  extends AsyncIterable<MessageShape<O>> {
  send(message: MessageInitShape<I>): Promise<void>;
  /** Tells the server no more messages follow (Data[remote-closed, no-data]). */
  closeSend(): void;
}

type MethodClient<M> = M extends {
  methodKind: infer K;
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? K extends "unary"
    ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
    : K extends "server_streaming"
      ? (request: MessageInitShape<I>, options?: CallOptions) => AsyncIterable<MessageShape<O>>
      : K extends "client_streaming"
        ? (options?: CallOptions) => ClientStreamingCall<I, O>
        : K extends "bidi_streaming"
          ? (options?: CallOptions) => BidiStreamingCall<I, O>
          : never
  : never;

/** Typed stubs for a generated service, keyed by the generated method names. */
export type ServiceClient<S extends DescService> = {
  [K in keyof S["method"]]: MethodClient<S["method"][K]>;
};

/** Timers cannot wait longer than this; longer deadlines are only sent, not enforced here. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_STREAM_ID = 0xffffffff;

/** One call in flight on the connection. */
class ClientCall {
  done = false;
  localClosed = false;
  private timer: NodeJS.Timeout | undefined;
  private signal: AbortSignal | undefined;
  // only calls given a signal pay for a listener
  private onAbort: (() => void) | undefined;
  /** Unary and client-streaming: the single response. */
  resolve: ((msg: unknown) => void) | undefined;
  reject: ((err: TtrpcError) => void) | undefined;
  /** Server- and bidi-streaming: the response messages. */
  queue: MessageQueue<unknown> | undefined;
  error: TtrpcError | undefined;

  constructor(
    readonly client: TtrpcClient,
    readonly id: number,
    readonly desc: DescMethod,
    options: CallOptions | undefined,
  ) {
    const timeoutMs = options?.timeoutMs;
    if (timeoutMs !== undefined && timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS) {
      this.timer = setTimeout(
        () => this.fail(new TtrpcError(Code.DeadlineExceeded, `deadline of ${timeoutMs} ms exceeded`)),
        timeoutMs,
      );
    }
    if (options?.signal) {
      this.signal = options.signal;
      this.onAbort = () => this.abort();
      this.signal.addEventListener("abort", this.onAbort, { once: true });
    }
  }

  /** A Response with OK status: the single result, or (streaming, as Go's client does) a last message. */
  succeed(msg: unknown): void {
    if (this.done) return;
    this.settle();
    this.resolve?.(msg);
    this.queue?.push(msg);
    this.queue?.end();
  }

  fail(err: TtrpcError): void {
    if (this.done) return;
    this.error = err;
    this.settle();
    this.reject?.(err);
    this.queue?.fail(err);
  }

  /** Stream ends without a final message (Data[remote-closed, no-data]). */
  end(): void {
    if (this.done) return;
    this.settle();
    this.queue?.end();
  }

  private settle(): void {
    this.done = true;
    clearTimeout(this.timer);
    if (this.onAbort) this.signal?.removeEventListener("abort", this.onAbort);
    this.client.forget(this);
  }

  private abort(): void {
    const reason = this.signal?.reason;
    this.fail(
      reason instanceof TtrpcError
        ? reason
        : new TtrpcError(Code.Canceled, `call canceled${reason instanceof Error ? `: ${reason.message}` : ""}`),
    );
  }
}

/**
 * ttrpc client over one connected Duplex. Calls are multiplexed; when the
 * connection goes, pending calls fail with Unavailable and `closed` resolves.
 * Reconnecting is the caller's business.
 */
export class TtrpcClient implements ChannelHandler {
  private readonly channel: Channel;
  private readonly calls = new Map<number, ClientCall>();
  private readonly routes = new Map<string, Buffer>();
  private nextId = 1;
  private closeReason: TtrpcError | undefined;
  private resolveClosed!: (err: Error | undefined) => void;
  /** Resolves when the connection is closed, with the error that closed it if any. */
  readonly closed: Promise<Error | undefined>;

  constructor(duplex: Duplex) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    this.channel = new Channel(duplex, this);
  }

  /**
   * Typed stubs for `service`; `name` overrides the wire service name (e.g.
   * call "containerd.task.v2.Task" with the v3 descriptor).
   */
  service<S extends DescService>(service: S, name: string = service.typeName): ServiceClient<S> {
    const stubs: Record<string, unknown> = {};
    for (const desc of service.methods) {
      const route = this.route(name, desc.name);
      switch (desc.methodKind) {
        case "unary":
          stubs[desc.localName] = (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
            this.unary(route, desc, req, opts);
          break;
        case "server_streaming":
          stubs[desc.localName] = (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
            this.serverStreaming(route, desc, req, opts);
          break;
        case "client_streaming":
          stubs[desc.localName] = (opts?: CallOptions) => this.clientStreaming(route, desc, opts);
          break;
        case "bidi_streaming":
          stubs[desc.localName] = (opts?: CallOptions) => this.bidiStreaming(route, desc, opts);
          break;
      }
    }
    return stubs as ServiceClient<S>;
  }

  /** Closes the connection; pending calls fail with Unavailable. */
  close(): void {
    this.channel.destroy();
  }

  /** @internal */
  forget(call: ClientCall): void {
    this.calls.delete(call.id);
  }

  onFrame(id: number, type: number, flags: number, data: Buffer): void {
    const call = this.calls.get(id);
    if (!call) return; // a call canceled or timed out here; its late answer is dropped
    if (type === MessageType.Response) {
      let res: ReturnType<typeof decodeResponse>;
      try {
        res = decodeResponse(data);
      } catch (err) {
        call.fail(new TtrpcError(Code.Internal, `malformed ttrpc response: ${(err as Error).message}`));
        return;
      }
      const err = statusError(res.status);
      if (err) {
        call.fail(err);
        return;
      }
      const msg = this.decode(call, res.payload);
      if (msg !== undefined) call.succeed(msg);
    } else if (type === MessageType.Data) {
      if (!call.queue) {
        call.fail(new TtrpcError(Code.Internal, `protocol error: data frame on ${call.desc.methodKind} call ${id}`));
        return;
      }
      if (!(flags & Flag.NoData)) {
        const msg = this.decode(call, data);
        if (msg === undefined) return;
        call.queue.push(msg);
      }
      if (flags & Flag.RemoteClosed) call.end();
    }
  }

  onOversize(id: number, _type: number, _flags: number, length: number): void {
    this.calls
      .get(id)
      ?.fail(
        new TtrpcError(
          Code.ResourceExhausted,
          `message length ${length} exceeds maximum message size of ${MAX_DATA_LENGTH}`,
        ),
      );
  }

  onClose(err: Error | undefined): void {
    this.closeReason = new TtrpcError(Code.Unavailable, `ttrpc: connection closed${err ? `: ${err.message}` : ""}`);
    for (const call of [...this.calls.values()]) call.fail(this.closeReason);
    this.resolveClosed(err);
  }

  private route(service: string, method: string): Buffer {
    const key = `${service}/${method}`;
    let route = this.routes.get(key);
    if (!route) {
      route = encodeRoute(service, method);
      this.routes.set(key, route);
    }
    return route;
  }

  private decode(call: ClientCall, data: Buffer): unknown {
    try {
      return decodeMessage(call.desc.output, data);
    } catch (err) {
      call.fail(new TtrpcError(Code.Internal, `cannot decode ${call.desc.output.typeName}: ${(err as Error).message}`));
      return undefined;
    }
  }

  /** Registers a call and sends its Request frame; throws TtrpcError when that is impossible. */
  private start(
    route: Buffer,
    desc: DescMethod,
    payload: readonly Uint8Array[],
    flags: number,
    options: CallOptions | undefined,
  ): ClientCall {
    if (this.closeReason) throw this.closeReason;
    if (options?.signal?.aborted) throw new TtrpcError(Code.Canceled, "call canceled before it started");
    const timeoutMs = options?.timeoutMs;
    const parts = encodeRequest(
      route,
      payload,
      timeoutMs !== undefined && timeoutMs > 0 ? Math.round(timeoutMs * 1e6) : 0,
      flattenMetadata(options?.metadata),
    );
    const length = byteLength(parts);
    if (length > MAX_DATA_LENGTH) {
      throw new TtrpcError(
        Code.ResourceExhausted,
        `request for ${desc.parent.typeName}/${desc.name} is ${length} bytes, over the maximum message size of ${MAX_DATA_LENGTH}`,
      );
    }
    if (this.nextId > MAX_STREAM_ID) throw new TtrpcError(Code.ResourceExhausted, "ttrpc: stream ids exhausted");
    const id = this.nextId;
    this.nextId += 2;
    const call = new ClientCall(this, id, desc, options);
    this.calls.set(id, call);
    this.channel.send(id, MessageType.Request, flags, parts);
    return call;
  }

  private unary(
    route: Buffer,
    desc: DescMethod,
    req: MessageInitShape<DescMessage>,
    options: CallOptions | undefined,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const call = this.start(route, desc, encodeMessage(desc.input, create(desc.input, req)), 0, options);
      call.resolve = resolve;
      call.reject = reject;
    });
  }

  private serverStreaming(
    route: Buffer,
    desc: DescMethod,
    req: MessageInitShape<DescMessage>,
    options: CallOptions | undefined,
  ): AsyncIterable<unknown> {
    let call: ClientCall;
    try {
      call = this.start(route, desc, encodeMessage(desc.input, create(desc.input, req)), Flag.RemoteClosed, options);
    } catch (err) {
      return failedIterable(err);
    }
    call.localClosed = true;
    call.queue = this.responseQueue(call);
    return call.queue;
  }

  private clientStreaming(
    route: Buffer,
    desc: DescMethod,
    options: CallOptions | undefined,
  ): ClientStreamingCall<DescMessage, DescMessage> {
    let call: ClientCall;
    try {
      call = this.start(route, desc, [], Flag.RemoteOpen, options);
    } catch (err) {
      return { send: () => Promise.reject(err), closeAndReceive: () => Promise.reject(err) };
    }
    const response = new Promise<unknown>((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
    });
    // the caller may never ask for the response; a failure must not become an unhandled rejection
    response.catch(() => {});
    return {
      send: (message) => this.sendData(call, message),
      closeAndReceive: () => {
        this.closeSend(call);
        return response as Promise<MessageShape<DescMessage>>;
      },
    };
  }

  private bidiStreaming(
    route: Buffer,
    desc: DescMethod,
    options: CallOptions | undefined,
  ): BidiStreamingCall<DescMessage, DescMessage> {
    let call: ClientCall;
    try {
      call = this.start(route, desc, [], Flag.RemoteOpen, options);
    } catch (err) {
      const failed = failedIterable(err);
      return {
        send: () => Promise.reject(err),
        closeSend: () => {},
        [Symbol.asyncIterator]: failed[Symbol.asyncIterator],
      };
    }
    const queue = this.responseQueue(call);
    call.queue = queue;
    return {
      send: (message) => this.sendData(call, message),
      closeSend: () => this.closeSend(call),
      [Symbol.asyncIterator]: () => (queue as MessageQueue<MessageShape<DescMessage>>)[Symbol.asyncIterator](),
    };
  }

  private responseQueue(call: ClientCall): MessageQueue<unknown> {
    return new MessageQueue<unknown>({
      onFull: () =>
        this.channel.stall(call, () =>
          call.fail(new TtrpcError(Code.ResourceExhausted, `call ${call.id}: receive buffer full for 1 s`)),
        ),
      onRelieved: () => this.channel.release(call),
      onAbandon: () => {
        this.channel.release(call);
        call.end();
      },
    });
  }

  private async sendData(call: ClientCall, message: MessageInitShape<DescMessage>): Promise<void> {
    if (call.error) throw call.error;
    if (call.localClosed) throw new TtrpcError(Code.FailedPrecondition, `call ${call.id}: send after closeSend`);
    if (call.done) return; // the server already answered; further input is moot
    const payload = encodeMessage(call.desc.input, create(call.desc.input, message));
    // buffers sent by reference must stay untouched until written: the caller may reuse them after send()
    if (payload.length > 1) await this.channel.sendWritten(call.id, MessageType.Data, 0, payload);
    else if (!this.channel.send(call.id, MessageType.Data, 0, payload)) await this.channel.drained();
  }

  private closeSend(call: ClientCall): void {
    if (call.localClosed) return;
    call.localClosed = true;
    if (!call.done) this.channel.send(call.id, MessageType.Data, Flag.RemoteClosed | Flag.NoData, []);
  }
}

function flattenMetadata(md: CallOptions["metadata"]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (!md) return out;
  for (const [key, value] of Object.entries(md)) {
    const k = key.toLowerCase();
    if (typeof value === "string") out.push([k, value]);
    else for (const v of value) out.push([k, v]);
  }
  return out;
}

function failedIterable(err: unknown): AsyncIterable<never> {
  return {
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(err) }),
  };
}
