import type { Duplex } from "node:stream";
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { Channel, type ChannelHandler } from "./channel.ts";
import { decodeMessage, encodeMessage } from "./codec.ts";
import { decodeRequest, encodeResponse, type Status } from "./envelope.ts";
import { Code, TtrpcError, toTtrpcError } from "./errors.ts";
import { Flag, MAX_DATA_LENGTH, MessageType } from "./frame.ts";
import { MessageQueue } from "./queue.ts";
import type { Registered, StreamWriter } from "./server-handlers.ts";
import { ServerCallContext, ServerStream } from "./server-stream.ts";

/** What a connection needs from the server that accepted it. */
export interface ConnectionServer {
  /** False once shutdown() or close() began: new calls get Unavailable. */
  readonly accepting: boolean;
  lookup(service: string, method: string): Registered | TtrpcError;
  removeConnection(conn: ServerConnection): void;
}

/** Timers cannot wait longer than this; longer deadlines are as good as none. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One client connection: turns its frames into handler calls and their results into frames. */
export class ServerConnection implements ChannelHandler {
  private readonly channel: Channel;
  private readonly streams = new Map<number, ServerStream>();
  private lastStreamId = 0;
  private closeWhenIdle = false;

  constructor(
    private readonly server: ConnectionServer,
    duplex: Duplex,
  ) {
    this.channel = new Channel(duplex, this);
  }

  drain(): void {
    this.closeWhenIdle = true;
    if (this.streams.size === 0) this.channel.end();
  }

  destroy(): void {
    this.channel.destroy();
  }

  onFrame(id: number, type: number, flags: number, data: Buffer): void {
    if (this.channel.closed) return;
    if (type === MessageType.Request) this.onRequest(id, flags, data);
    else if (type === MessageType.Data) this.onData(id, flags, data);
    // Responses from a client and unknown types are ignored, as containerd/ttrpc does (room for extensions).
  }

  onOversize(id: number, _type: number, _flags: number, length: number): void {
    const err = new TtrpcError(
      Code.ResourceExhausted,
      `message length ${length} exceeds maximum message size of ${MAX_DATA_LENGTH}`,
    );
    const stream = this.streams.get(id);
    if (stream) this.fail(stream, err);
    else this.sendStatus(id, err);
  }

  onClose(): void {
    const reason = new TtrpcError(Code.Canceled, "ttrpc: connection closed");
    for (const stream of this.streams.values()) {
      stream.done = true;
      clearTimeout(stream.timer);
      stream.abort(reason);
      stream.queue?.fail(reason);
    }
    this.streams.clear();
    this.server.removeConnection(this);
  }

  private onRequest(id: number, flags: number, data: Buffer): void {
    if (id % 2 === 0) {
      this.sendStatus(id, new TtrpcError(Code.InvalidArgument, "stream id must be odd for client-initiated streams"));
      return;
    }
    if (id <= this.lastStreamId) {
      this.sendStatus(
        id,
        new TtrpcError(
          Code.InvalidArgument,
          `stream id ${id} cannot be reused: ids must increase (last ${this.lastStreamId})`,
        ),
      );
      return;
    }
    this.lastStreamId = id;
    if (!this.server.accepting) {
      this.sendStatus(id, new TtrpcError(Code.Unavailable, "ttrpc: server is shutting down"));
      return;
    }
    let req: ReturnType<typeof decodeRequest>;
    try {
      req = decodeRequest(data);
    } catch (err) {
      this.sendStatus(id, new TtrpcError(Code.InvalidArgument, `malformed ttrpc request: ${(err as Error).message}`));
      return;
    }
    const reg = this.server.lookup(req.service, req.method);
    if (reg instanceof TtrpcError) {
      this.sendStatus(id, reg);
      return;
    }
    if (req.timeoutNano < 0) {
      this.sendStatus(id, new TtrpcError(Code.DeadlineExceeded, "deadline already exceeded on arrival"));
      return;
    }

    const stream = new ServerStream(id, reg.desc);
    this.streams.set(id, stream);
    if (req.timeoutNano > 0) {
      const ms = req.timeoutNano / 1e6;
      if (ms <= MAX_TIMER_MS) {
        stream.timer = setTimeout(
          () => this.fail(stream, new TtrpcError(Code.DeadlineExceeded, `deadline of ${ms} ms exceeded`)),
          ms,
        );
      }
    }
    const ctx = new ServerCallContext(stream, req.metadata, req.service, req.method);
    const { desc, handler } = reg;

    if (stream.kind === "unary" || stream.kind === "server_streaming") {
      let input: unknown;
      try {
        input = decodeMessage(desc.input, req.payload);
      } catch (err) {
        this.fail(stream, decodeError(desc.input, err));
        return;
      }
      if (stream.kind === "unary") {
        let res: unknown;
        try {
          res = handler(input, ctx);
        } catch (err) {
          this.fail(stream, toTtrpcError(err));
          return;
        }
        // synchronous handlers answer without a trip through the microtask queue
        if (isPromiseLike(res)) {
          res.then(
            (value) => this.reply(stream, value),
            (err) => this.fail(stream, toTtrpcError(err)),
          );
        } else {
          this.reply(stream, res);
        }
      } else {
        invoke(() => handler(input, this.writer(stream), ctx)).then(
          () => this.finishStreaming(stream),
          (err) => this.fail(stream, toTtrpcError(err)),
        );
      }
      return;
    }

    const queue = new MessageQueue<unknown>({
      onFull: () =>
        this.channel.stall(stream, () =>
          this.fail(stream, new TtrpcError(Code.ResourceExhausted, `stream ${id}: receive buffer full for 1 s`)),
        ),
      onRelieved: () => this.channel.release(stream),
      onAbandon: () => this.channel.release(stream),
    });
    stream.queue = queue;
    // containerd/ttrpc clients put no first message in a streaming Request, but accept one if present
    if (req.hasPayload && !this.pushData(stream, req.payload)) return;
    if (flags & Flag.RemoteClosed) {
      stream.remoteClosed = true;
      queue.end();
    }
    if (stream.kind === "client_streaming") {
      invoke(() => handler(queue, ctx)).then(
        (res) => this.reply(stream, res),
        (err) => this.fail(stream, toTtrpcError(err)),
      );
    } else {
      invoke(() => handler(queue, this.writer(stream), ctx)).then(
        () => this.finishStreaming(stream),
        (err) => this.fail(stream, toTtrpcError(err)),
      );
    }
  }

  private onData(id: number, flags: number, data: Buffer): void {
    if (id % 2 === 0) {
      this.sendStatus(id, new TtrpcError(Code.InvalidArgument, "stream id must be odd for client-initiated streams"));
      return;
    }
    const stream = this.streams.get(id);
    if (!stream) {
      // data racing the end of a finished stream is dropped; data for a stream never opened is an error
      if (id > this.lastStreamId) {
        this.sendStatus(
          id,
          new TtrpcError(Code.InvalidArgument, `data frame for stream ${id}, which was never opened`),
        );
      }
      return;
    }
    if (!stream.queue || stream.remoteClosed) {
      this.fail(
        stream,
        new TtrpcError(
          Code.InvalidArgument,
          stream.queue
            ? `data frame on stream ${id} after the client closed its side`
            : `data frame on stream ${id}: ${stream.desc.parent.typeName}/${stream.desc.name} takes no client stream`,
        ),
      );
      return;
    }
    if (!(flags & Flag.NoData) && !this.pushData(stream, data)) return;
    if (flags & Flag.RemoteClosed) {
      stream.remoteClosed = true;
      stream.queue.end();
    }
  }

  /** Decodes one client message into the stream's queue; false when that failed the stream. */
  private pushData(stream: ServerStream, data: Buffer): boolean {
    let msg: unknown;
    try {
      msg = decodeMessage(stream.desc.input, data);
    } catch (err) {
      this.fail(stream, decodeError(stream.desc.input, err));
      return false;
    }
    stream.queue!.push(msg);
    return true;
  }

  private writer(stream: ServerStream): StreamWriter<DescMessage> {
    const output = stream.desc.output;
    return {
      send: async (message) => {
        if (stream.done) throw new TtrpcError(Code.Canceled, `stream ${stream.id} is closed`);
        const payload = encodeMessage(output, create(output, message));
        // buffers sent by reference must stay untouched until written: the caller may reuse them after send()
        if (payload.length > 1) await this.channel.sendWritten(stream.id, MessageType.Data, 0, payload);
        else if (!this.channel.send(stream.id, MessageType.Data, 0, payload)) await this.channel.drained();
      },
    };
  }

  /** Unary and client-streaming success: one Response carrying the output. */
  private reply(stream: ServerStream, result: unknown): void {
    if (stream.done) return;
    let payload: Uint8Array[];
    try {
      payload = encodeMessage(stream.desc.output, create(stream.desc.output, result as MessageInitShape<DescMessage>));
    } catch (err) {
      this.fail(
        stream,
        new TtrpcError(Code.Internal, `cannot encode ${stream.desc.output.typeName}: ${(err as Error).message}`),
      );
      return;
    }
    this.complete(stream, MessageType.Response, 0, encodeResponse(undefined, payload));
  }

  /** Server- and bidi-streaming success: Data[remote-closed, no-data], as containerd/ttrpc ends them. */
  private finishStreaming(stream: ServerStream): void {
    this.complete(stream, MessageType.Data, Flag.RemoteClosed | Flag.NoData, []);
  }

  private fail(stream: ServerStream, err: TtrpcError): void {
    if (stream.done) return;
    stream.abort(err);
    stream.queue?.fail(err);
    this.complete(stream, MessageType.Response, 0, encodeResponse(toStatus(err), []));
  }

  private complete(stream: ServerStream, type: number, flags: number, parts: Uint8Array[]): void {
    if (stream.done) return;
    stream.done = true;
    clearTimeout(stream.timer);
    this.streams.delete(stream.id);
    stream.queue?.end();
    this.channel.release(stream);
    try {
      this.channel.send(stream.id, type, flags, parts);
    } catch (err) {
      // the answer itself is too large: say so instead
      this.sendStatus(stream.id, toTtrpcError(err));
    }
    if (this.closeWhenIdle && this.streams.size === 0) this.channel.end();
  }

  private sendStatus(id: number, err: TtrpcError): void {
    this.channel.send(id, MessageType.Response, 0, encodeResponse(toStatus(err), []));
  }
}

function toStatus(err: TtrpcError): Status {
  return { code: err.code, message: err.message, details: err.details };
}

function decodeError(schema: DescMessage, err: unknown): TtrpcError {
  return new TtrpcError(Code.InvalidArgument, `cannot decode ${schema.typeName}: ${(err as Error).message}`);
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as PromiseLike<unknown> | null)?.then === "function";
}

function invoke(fn: () => unknown): Promise<unknown> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}
