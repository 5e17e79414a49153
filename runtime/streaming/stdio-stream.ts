import type { Readable, Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { type Any, anyPack, anyUnpack, EmptySchema } from "@bufbuild/protobuf/wkt";
import { StreamInitSchema } from "../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { dataMessage, ProtocolViolation, parseMessage, windowMessage } from "./messages.ts";

/**
 * Stdio over containerd's Streaming service (one bidirectional stream of Any per stdio stream): the sender
 * sends transfer.Data, the receiver grants credit with transfer.WindowUpdate as its sink accepts bytes, so a
 * slow reader (a full FIFO, a paused terminal) holds the writing process back instead of growing a buffer.
 */
export const WINDOW = 64 * 1024;

/** One side of a Streaming.Stream call, whichever end of ttrpc it is on. */
export interface AnyChannel {
  send(msg: Any): Promise<void>;
  messages: AsyncIterator<Any>;
  /** No more messages from this side. */
  end(): void;
}

/** Guest stdio fields name a stream instead of a path: "stream:<container>/<exec or init>/<stdin|stdout|stderr>". */
export const STREAM_PREFIX = "stream:";

export function stdioStreamId(containerId: string, execId: string, which: "stdin" | "stdout" | "stderr"): string {
  return `${containerId}/${execId || "init"}/${which}`;
}

export const initMessage = (id: string): Any => anyPack(StreamInitSchema, create(StreamInitSchema, { id }));
export const ackMessage = (): Any => anyPack(EmptySchema, create(EmptySchema));

/** Reads the StreamInit that opens a stream (server side) and returns its id. */
export async function readInit(ch: AnyChannel): Promise<string> {
  const first = await ch.messages.next();
  if (first.done) throw new Error("stream closed before its StreamInit");
  const init = anyUnpack(first.value, StreamInitSchema);
  if (!init?.id) throw new Error(`stream opened with ${first.value.typeUrl} instead of a StreamInit with an id`);
  return init.id;
}

/**
 * The most credit a sender keeps. A receiver that keeps to the protocol never has more outstanding (ours grants one
 * WINDOW, containerd's ReceiveStream tops up to two), so a peer granting 2^31 gets no more than this in flight.
 */
export const MAX_CREDIT = 4 * WINDOW;

/**
 * Sends a readable's bytes as Data, never more than the peer granted; ends the channel at EOF. A peer that sends
 * anything but WindowUpdate is cut off: the source is destroyed and the promise rejects naming the stream.
 */
export async function sendStream(ch: AnyChannel, source: Readable, name: string): Promise<void> {
  let credit = 0;
  /** The peer ended its side, its connection went, or it broke the protocol: nothing more is sent. */
  let closed = false;
  let violation: ProtocolViolation | undefined;
  let wake: (() => void) | undefined;
  void (async () => {
    try {
      for (;;) {
        const r = await ch.messages.next();
        if (r.done) return;
        const m = parseMessage(r.value, name);
        if (m.kind !== "window")
          throw new ProtocolViolation(`stdio stream ${name}: the receiver sent Data where only WindowUpdate belongs`);
        // an int32 update may be zero or negative: it grants nothing
        if (m.update > 0) credit = Math.min(credit + m.update, MAX_CREDIT);
        wake?.();
      }
    } catch (err) {
      // a lost connection ends the stream as the peer ending it would; a violation is reported
      if (err instanceof ProtocolViolation) {
        violation = err;
        void ch.messages.return?.();
        source.destroy();
      }
    } finally {
      closed = true;
      wake?.();
    }
  })();
  const sendAll = async () => {
    // Not destroyed at EOF: a duplex source (a port-forwarded socket) still has its other direction to finish.
    for await (const chunk of source.iterator({ destroyOnReturn: false })) {
      let buf = chunk as Buffer;
      while (buf.length > 0) {
        while (credit === 0 && !closed) await new Promise<void>((r) => (wake = r));
        if (closed) return;
        const n = Math.min(credit, buf.length);
        credit -= n;
        await ch.send(dataMessage(buf.subarray(0, n)));
        buf = buf.subarray(n);
      }
    }
  };
  try {
    await sendAll();
  } catch (err) {
    // on a violation the source was destroyed under the loop: report the violation instead
    if (!violation) throw err;
  } finally {
    ch.end();
    if (closed) source.destroy();
  }
  if (violation) throw violation;
}

/**
 * Writes the peer's Data into sink and grants credit back only as the sink accepts bytes, so the sink never holds
 * more than WINDOW; ends the sink at EOF. A peer that sends past its credit, or anything but Data, is cut off: the
 * sink is destroyed, nothing more is read, and the promise rejects naming the stream.
 */
export async function receiveStream(ch: AnyChannel, sink: Writable, name: string): Promise<void> {
  const grant = (n: number) => ch.send(windowMessage(n)).catch(() => undefined);
  /** Granted and not yet used by the peer. */
  let credit = WINDOW;
  await grant(WINDOW);
  try {
    for (;;) {
      const r = await ch.messages.next();
      if (r.done) break;
      const m = parseMessage(r.value, name);
      if (m.kind !== "data")
        throw new ProtocolViolation(`stdio stream ${name}: the sender sent a WindowUpdate where only Data belongs`);
      const n = m.data.length;
      if (n > credit)
        throw new ProtocolViolation(
          `stdio stream ${name}: the sender sent ${n} bytes with ${credit} bytes of credit left (it must wait for WindowUpdate); closing the stream`,
        );
      if (n === 0) continue;
      credit -= n;
      // a copy: the decoded bytes are a view that would pin the connection's read buffer while the sink holds them
      sink.write(Buffer.from(m.data), (err) => {
        if (err) return;
        credit += n;
        void grant(n);
      });
    }
  } catch (err) {
    if (err instanceof ProtocolViolation) {
      sink.destroy();
      ch.end();
      void ch.messages.return?.();
    }
    throw err;
  }
  await new Promise<void>((resolve) => sink.end(resolve));
}
