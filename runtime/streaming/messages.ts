import { create } from "@bufbuild/protobuf";
import { type Any, anyIs, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { DataSchema, WindowUpdateSchema } from "../protos/gen/containerd/types/transfer/streaming_pb.ts";

/** A peer broke the Streaming protocol (sent past its credit, or a message the stream does not carry). */
export class ProtocolViolation extends Error {
  override name = "ProtocolViolation";
}

/** The two messages a stdio stream carries once opened: bytes one way, credit the other. */
export type StreamMessage = { kind: "data"; data: Uint8Array } | { kind: "window"; update: number };

export const dataMessage = (data: Uint8Array): Any => anyPack(DataSchema, create(DataSchema, { data }));
export const windowMessage = (update: number): Any =>
  anyPack(WindowUpdateSchema, create(WindowUpdateSchema, { update }));

/**
 * Reads a message from a peer that may be hostile: a well-formed transfer.Data or transfer.WindowUpdate, or a
 * ProtocolViolation naming the stream and what arrived.
 */
export function parseMessage(msg: Any, stream: string): StreamMessage {
  // the type URL is the peer's text too: quote a bounded, printable piece of it
  const type = JSON.stringify(msg.typeUrl.slice(0, 120));
  try {
    if (anyIs(msg, DataSchema)) return { kind: "data", data: anyUnpack(msg, DataSchema)!.data };
    if (anyIs(msg, WindowUpdateSchema)) return { kind: "window", update: anyUnpack(msg, WindowUpdateSchema)!.update };
  } catch (err) {
    throw new ProtocolViolation(
      `stdio stream ${stream}: malformed message of type ${type} (${(err as Error).message}); closing the stream`,
    );
  }
  throw new ProtocolViolation(
    `stdio stream ${stream}: got a message of type ${type}; only transfer.Data and transfer.WindowUpdate belong on it, closing the stream`,
  );
}
