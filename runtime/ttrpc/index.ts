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
export {
  type BidiStreamingHandler,
  type CallContext,
  type ClientStreamingHandler,
  type ServerStreamingHandler,
  type ServiceHandlers,
  type StreamWriter,
  TtrpcServer,
  type UnaryHandler,
} from "./server.ts";
