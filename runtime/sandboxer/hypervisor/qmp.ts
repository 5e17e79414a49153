import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** An asynchronous QMP event ({"event": ..., "data": ..., "timestamp": ...}). */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** A command the VMM answered with {"error": {"class", "desc"}}. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = "QmpError";
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/**
 * A QMP client for QEMU and StratoVirt: reads the greeting, negotiates capabilities, then runs commands (matched to
 * answers by id) and emits "event" for asynchronous events and "close" when the VMM goes away.
 */
export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  /** The greeting's version object ({"qemu": {...}} or {"StratoVirt": {...}}). */
  version: Record<string, unknown> = {};
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private buf = "";
  private isClosed = false;

  private constructor(
    private readonly sock: Socket,
    readonly path: string,
  ) {
    super();
  }

  /** Connects, retrying until timeoutMs (or keepTrying() turns false) while the VMM is still creating its socket. */
  static async connect(path: string, timeoutMs: number, keepTrying?: () => boolean): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await QmpClient.connectOnce(path, Math.max(deadline - Date.now(), 500));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === "ENOENT" || code === "ECONNREFUSED";
        if (!retryable || Date.now() >= deadline || keepTrying?.() === false) {
          throw new Error(`QMP ${path}: ${(err as Error).message}`);
        }
        await sleep(25);
      }
    }
  }

  private static connectOnce(path: string, timeoutMs: number): Promise<QmpClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      const client = new QmpClient(sock, path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`no QMP greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      sock.once("error", fail);
      sock.setEncoding("utf8");
      let greeted = false;
      sock.on("data", (chunk: string) => {
        client.buf += chunk;
        let nl = client.buf.indexOf("\n");
        while (nl >= 0) {
          const line = client.buf.slice(0, nl).trim();
          client.buf = client.buf.slice(nl + 1);
          nl = client.buf.indexOf("\n");
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            sock.destroy(new Error(`not QMP: ${line.slice(0, 200)}`));
            return;
          }
          if (!greeted) {
            const qmp = msg.QMP as { version?: Record<string, unknown> } | undefined;
            if (!qmp) {
              sock.destroy(new Error(`expected a QMP greeting, got ${line.slice(0, 200)}`));
              return;
            }
            greeted = true;
            client.version = qmp.version ?? {};
            client.execute("qmp_capabilities").then(() => {
              clearTimeout(timer);
              sock.off("error", fail);
              sock.on("error", () => {});
              resolve(client);
            }, fail);
            continue;
          }
          client.dispatch(msg);
        }
      });
      sock.on("close", () => {
        client.isClosed = true;
        const err = new Error(`QMP connection ${path} closed`);
        for (const p of client.pending.values()) p.reject(err);
        client.pending.clear();
        if (!greeted) fail(err);
        client.emit("close");
      });
    });
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (typeof msg.event === "string") {
      this.emit("event", msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    // Answers come in order; an answer without our id (a VMM that drops ids) goes to the oldest command.
    const key = id && this.pending.has(id) ? id : this.pending.keys().next().value;
    if (key === undefined) return;
    const p = this.pending.get(key)!;
    this.pending.delete(key);
    if ("error" in msg) {
      const e = (msg.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? "GenericError", e.desc ?? JSON.stringify(msg.error)));
    } else {
      p.resolve(msg.return);
    }
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Runs one command; rejects with QmpError when the VMM refuses it, or when the connection closes first. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.isClosed) return Promise.reject(new Error(`QMP connection ${this.path} is closed (${command})`));
    const id = `k${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  /** Resolves with the first event named `name` that matches, or rejects after timeoutMs. */
  waitEvent(name: string, match: (e: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off("event", on);
        this.off("close", onClose);
      };
      const on = (e: QmpEvent) => {
        if (e.event === name && match(e)) {
          done();
          resolve(e);
        }
      };
      const onClose = () => {
        done();
        reject(new Error(`QMP connection ${this.path} closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on("event", on);
      this.once("close", onClose);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
