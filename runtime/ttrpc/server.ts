import type { Server as NetServer, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { DescService } from "@bufbuild/protobuf";
import { Code, TtrpcError } from "./errors.ts";
import { type ConnectionServer, ServerConnection } from "./server-connection.ts";
import type { Registered, ServiceHandlers } from "./server-handlers.ts";

type ServerState = "serving" | "draining" | "closed";

/**
 * ttrpc server. Serves any Duplex (unix socket, vsock, hybrid-vsock stream);
 * each connection is isolated: a bad frame answers an error on its stream, a
 * malformed header closes that connection only.
 */
export class TtrpcServer implements ConnectionServer {
  private readonly services = new Map<string, Map<string, Registered>>();
  private readonly connections = new Set<ServerConnection>();
  private readonly listeners = new Map<NetServer, Promise<void> | null>();
  private closedWaiters: Array<() => void> = [];
  private state: ServerState = "serving";

  /** Serves `service` under its own name (e.g. "containerd.task.v3.Task"). */
  register<S extends DescService>(service: S, handlers: ServiceHandlers<S>): this {
    return this.registerAs(service.typeName, service, handlers);
  }

  /** Serves `service`'s methods under another wire name, e.g. containerd.task.v2.Task with the v3 handlers. */
  registerAs<S extends DescService>(name: string, service: S, handlers: ServiceHandlers<S>): this {
    if (this.services.has(name)) throw new Error(`TtrpcServer: service ${name} is already registered`);
    const methods = new Map<string, Registered>();
    const given = handlers as Record<string, Registered["handler"] | undefined>;
    for (const key of Object.keys(given)) {
      if (!(key in service.method)) {
        throw new Error(
          `TtrpcServer: handler "${key}" matches no method of ${service.typeName} (methods: ${service.methods.map((m) => m.localName).join(", ")})`,
        );
      }
    }
    for (const desc of service.methods) {
      const handler = given[desc.localName];
      if (handler) methods.set(desc.name, { desc, handler });
    }
    this.services.set(name, methods);
    return this;
  }

  /** Accepts the listener's connections until shutdown()/close(), which also close the listener. */
  serve(listener: NetServer): void {
    if (this.state !== "serving") throw new Error("TtrpcServer.serve: the server is shut down");
    if (this.listeners.has(listener)) return;
    this.listeners.set(listener, null);
    listener.on("connection", this.onConnection);
  }

  /** Speaks ttrpc on one already-connected stream. */
  handleConnection(duplex: Duplex): void {
    if (this.state !== "serving") {
      duplex.on("error", () => {});
      duplex.destroy();
      return;
    }
    this.connections.add(new ServerConnection(this, duplex));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops accepting connections and calls (new calls get Unavailable), lets
   * in-flight calls finish, then closes every connection. Race it with a
   * timer and call close() to bound the wait.
   */
  async shutdown(): Promise<void> {
    if (this.state === "serving") this.state = "draining";
    const listenersClosed = this.closeListeners();
    for (const conn of this.connections) conn.drain();
    await this.allConnectionsClosed();
    await listenersClosed;
  }

  /** Closes everything now; in-flight handlers see their signal aborted. */
  async close(): Promise<void> {
    this.state = "closed";
    const listenersClosed = this.closeListeners();
    for (const conn of this.connections) conn.destroy();
    await this.allConnectionsClosed();
    await listenersClosed;
  }

  /** @internal */
  get accepting(): boolean {
    return this.state === "serving";
  }

  /** @internal */
  lookup(service: string, method: string): Registered | TtrpcError {
    const methods = this.services.get(service);
    if (!methods) return new TtrpcError(Code.Unimplemented, `unknown service ${service}`);
    const reg = methods.get(method);
    if (!reg) return new TtrpcError(Code.Unimplemented, `unknown method ${method} of service ${service}`);
    return reg;
  }

  /** @internal */
  removeConnection(conn: ServerConnection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0) {
      const waiters = this.closedWaiters;
      this.closedWaiters = [];
      for (const w of waiters) w();
    }
  }

  private readonly onConnection = (socket: Socket): void => {
    this.handleConnection(socket);
  };

  private allConnectionsClosed(): Promise<void> {
    if (this.connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  private closeListeners(): Promise<void> {
    const all: Promise<void>[] = [];
    for (const [listener, closing] of this.listeners) {
      if (closing) {
        all.push(closing);
        continue;
      }
      listener.off("connection", this.onConnection);
      // close() calls back once the listener's own connections are gone too; a
      // listener that was never listening calls back with an error, which is fine here
      const p = new Promise<void>((resolve) => listener.close(() => resolve()));
      this.listeners.set(listener, p);
      all.push(p);
    }
    return Promise.all(all).then(() => this.listeners.clear());
  }
}
