import { status as grpcStatus, type ServiceError } from "@grpc/grpc-js";
import { type MethodsOf, type UnaryClient, unaryClient } from "../grpc/service.ts";
import { Controller } from "../protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";

export type ControllerClient = UnaryClient<MethodsOf<typeof Controller>>;

/** A sandbox Controller client on the daemon's socket; gRPC dials lazily, so this never fails by itself. */
export function controllerClient(listen: string): { client: ControllerClient; close: () => void } {
  return unaryClient(Controller, `unix://${listen}`);
}

/** grpc-js wraps a refused connection in "No connection established. Last error: Error: connect ENOENT ...". */
export function reasonOf(e: ServiceError): string {
  const m = /Error: (connect \S+ \S+?)\.?(?:\s|$)/.exec(e.details ?? "");
  return m ? m[1]! : e.details || e.message;
}

/** An id no sandbox can have (ids start with a letter or digit): the daemon answers it with an error, not a hang. */
const PROBE_ID = "-kuasar-probe";

/**
 * Is a vmm-sandboxer serving on the socket: any answer from its Controller counts, including the error it gives
 * for an id it does not know. Connection failures and timeouts do not.
 */
export async function probeDaemon(
  listen: string,
  timeoutMs = 2000,
): Promise<{ up: true } | { up: false; reason: string }> {
  const { client, close } = controllerClient(listen);
  try {
    await client.status({ sandboxId: PROBE_ID }, { deadlineMs: timeoutMs });
    return { up: true };
  } catch (err) {
    const e = err as ServiceError;
    if (e.code === grpcStatus.UNAVAILABLE || e.code === grpcStatus.DEADLINE_EXCEEDED) {
      return { up: false, reason: reasonOf(e) };
    }
    if (e.code === grpcStatus.UNIMPLEMENTED) {
      return { up: false, reason: "something other than vmm-sandboxer serves there (no sandbox Controller)" };
    }
    return { up: true };
  } finally {
    close();
  }
}
