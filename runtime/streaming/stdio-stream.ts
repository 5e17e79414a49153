import type { Readable, Writable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { type Any, anyIs, anyPack, anyUnpack, EmptySchema } from "@bufbuild/protobuf/wkt";
import { StreamInitSchema } from "../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { DataSchema, WindowUpdateSchema } from "../protos/gen/containerd/types/transfer/streaming_pb.ts";

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

/** Sends a readable's bytes as Data, never more than the peer granted; ends the channel at EOF. */
export async function sendStream(ch: AnyChannel, source: Readable): Promise<void> {
  let credit = 0;
  let peerGone = false;
  let wake: (() => void) | undefined;
  const credits = (async () => {
    for (;;) {
      const r = await ch.messages.next().catch(() => ({ done: true as const, value: undefined }));
      if (r.done) break;
      const upd = anyIs(r.value, WindowUpdateSchema) ? anyUnpack(r.value, WindowUpdateSchema) : undefined;
      if (upd && upd.update > 0) credit += upd.update;
      wake?.();
    }
    peerGone = true;
    wake?.();
  })();
  try {
    for await (const chunk of source) {
      let buf = chunk as Buffer;
      while (buf.length > 0) {
        while (credit === 0 && !peerGone) await new Promise<void>((r) => (wake = r));
        if (peerGone) return;
        const n = Math.min(credit, buf.length);
        credit -= n;
        await ch.send(anyPack(DataSchema, create(DataSchema, { data: buf.subarray(0, n) })));
        buf = buf.subarray(n);
      }
    }
  } finally {
    ch.end();
    if (peerGone) source.destroy();
    void credits;
  }
}

/** Writes every Data message into sink and grants credit back as the sink accepts it; ends the sink at EOF. */
export async function receiveStream(ch: AnyChannel, sink: Writable): Promise<void> {
  const grant = (n: number) =>
    ch.send(anyPack(WindowUpdateSchema, create(WindowUpdateSchema, { update: n }))).catch(() => undefined);
  await grant(WINDOW);
  for (;;) {
    const r = await ch.messages.next();
    if (r.done) break;
    const data = anyUnpack(r.value, DataSchema);
    if (!data || data.data.length === 0) continue;
    const n = data.data.length;
    sink.write(data.data, (err) => {
      if (!err) void grant(n);
    });
  }
  await new Promise<void>((resolve) => sink.end(resolve));
}
