import { Streaming } from "../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import type { TtrpcClient } from "../ttrpc/index.ts";
import { type AnyChannel, initMessage } from "./stdio-stream.ts";

/** Opens a Streaming stream on a ttrpc connection (the host's to the guest agent): StreamInit, then its ack. */
export async function openStream(client: TtrpcClient, id: string): Promise<AnyChannel> {
  const call = client.service(Streaming).stream();
  const it = call[Symbol.asyncIterator]();
  await call.send(initMessage(id));
  const ack = await it.next();
  if (ack.done) throw new Error(`the guest refused stream ${id}`);
  return { send: (m) => call.send(m), messages: it, end: () => call.closeSend() };
}
