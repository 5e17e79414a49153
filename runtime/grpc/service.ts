import {
  create,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { GenMessage, GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";

type Shape<S> = S extends GenMessage<infer M> ? M : never;
type Init<S> = S extends GenMessage<infer M> ? MessageInitShape<GenMessage<M>> : never;

export interface CallContext {
  metadata: grpc.Metadata;
  /** Aborted when the client cancels or its deadline passes. */
  signal: AbortSignal;
}

/** The method map of a generated service descriptor. */
export type MethodsOf<S> = S extends GenService<infer M> ? M : never;

/** Async handlers for the unary methods of a generated service. */
export type UnaryHandlers<M extends GenServiceMethods> = {
  [K in keyof M]: (req: Shape<M[K]["input"]>, ctx: CallContext) => Promise<Init<M[K]["output"]>>;
};

/** An error carrying a gRPC status code; anything else a handler throws becomes INTERNAL. */
export class GrpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = "GrpcError";
  }
}

function methodPath(svc: DescService, m: DescMethod): string {
  return `/${svc.typeName}/${m.name}`;
}

/** Registers unary handlers for a protobuf-es service on a grpc-js server. */
export function addUnaryService<M extends GenServiceMethods>(
  server: grpc.Server,
  svc: GenService<M>,
  handlers: UnaryHandlers<M>,
  onError?: (method: string, err: unknown) => void,
): void {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const impl: grpc.UntypedServiceImplementation = {};
  for (const m of svc.methods) {
    if (m.methodKind !== "unary") throw new Error(`${methodPath(svc, m)}: only unary methods are supported`);
    const handler = (handlers as Record<string, UnaryHandlers<M>[keyof M]>)[m.localName];
    if (!handler) throw new Error(`${methodPath(svc, m)} has no handler`);
    definition[m.localName] = {
      path: methodPath(svc, m),
      requestStream: false,
      responseStream: false,
      requestSerialize: (v: unknown) => Buffer.from(toBinary(m.input, v as never)),
      requestDeserialize: (b: Buffer) => fromBinary(m.input, b),
      responseSerialize: (v: unknown) => Buffer.from(toBinary(m.output, v as never)),
      responseDeserialize: (b: Buffer) => fromBinary(m.output, b),
    };
    impl[m.localName] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const ac = new AbortController();
      call.on("cancelled", () => ac.abort());
      handler(call.request as never, { metadata: call.metadata, signal: ac.signal }).then(
        (res) => callback(null, create(m.output, res as never)),
        (err: unknown) => {
          onError?.(methodPath(svc, m), err);
          const code = err instanceof GrpcError ? err.code : grpc.status.INTERNAL;
          callback({ code, details: err instanceof Error ? err.message : String(err) });
        },
      );
    };
  }
  server.addService(definition, impl);
}

export type UnaryClient<M extends GenServiceMethods> = {
  [K in keyof M]: (
    req: Init<M[K]["input"]>,
    opts?: { deadlineMs?: number; metadata?: Record<string, string> },
  ) => Promise<Shape<M[K]["output"]>>;
};

/** A promise-based client for the unary methods of a protobuf-es service. */
export function unaryClient<M extends GenServiceMethods>(
  svc: GenService<M>,
  target: string,
  credentials = grpc.credentials.createInsecure(),
): { client: UnaryClient<M>; close: () => void } {
  const raw = new grpc.Client(target, credentials, { "grpc.max_receive_message_length": 16 << 20 });
  const client: Record<string, unknown> = {};
  for (const m of svc.methods) {
    client[m.localName] = (req: unknown, opts: { deadlineMs?: number; metadata?: Record<string, string> } = {}) =>
      new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
        const callOpts: grpc.CallOptions = opts.deadlineMs ? { deadline: Date.now() + opts.deadlineMs } : {};
        raw.makeUnaryRequest(
          methodPath(svc, m),
          (v: unknown) => Buffer.from(toBinary(m.input, create(m.input, v as never))),
          (b: Buffer) => fromBinary(m.output, b),
          req,
          md,
          callOpts,
          (err, res) => (err ? reject(err) : resolve(res)),
        );
      });
  }
  return { client: client as UnaryClient<M>, close: () => raw.close() };
}
