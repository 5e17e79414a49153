// ttrpc (containerd/ttrpc wire protocol) client and server for any Node Duplex.
export {
  type BidiStreamingCall,
  type CallOptions,
  type ClientStreamingCall,
  type ServiceClient,
  TtrpcClient,
} from "./client.ts";
export { Code, TtrpcError, toTtrpcError } from "./errors.ts";
export { Flag, HEADER_LENGTH, MAX_DATA_LENGTH, MessageType } from "./frame.ts";
export { TtrpcServer } from "./server.ts";
export type {
  BidiStreamingHandler,
  CallContext,
  ClientStreamingHandler,
  ServerStreamingHandler,
  ServiceHandlers,
  StreamWriter,
  UnaryHandler,
} from "./server-handlers.ts";
export { heldUntil } from "./server-handlers.ts";
