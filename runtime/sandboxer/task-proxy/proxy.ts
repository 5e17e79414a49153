import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import type net from "node:net";
import path from "node:path";
import { TaskCreateSchema, TaskDeleteSchema, TaskExecAddedSchema } from "../../protos/gen/containerd/events/task_pb.ts";
import { Task } from "../../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Streaming } from "../../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { writeTaskLink } from "../../shim/task-link.ts";
import { Rendezvous } from "../../streaming/rendezvous.ts";
import {
  type AnyChannel,
  ackMessage,
  initMessage,
  readInit,
  receiveStream,
  STREAM_PREFIX,
  sendStream,
  stdioStreamId,
} from "../../streaming/stdio-stream.ts";
import { Code, type ServiceHandlers, type TtrpcClient, TtrpcError } from "../../ttrpc/index.ts";
import type { EventPublisher } from "../events.ts";
import { validateId } from "../ids.ts";
import type { Logger } from "../log.ts";
import { type GuestBundle, prepareGuestBundle, releaseGuestBundle, type Share } from "../storage/guest-bundle.ts";
import { writeJsonAtomic } from "../store.ts";
import { openFifo } from "./fifo.ts";

interface HostStdio {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

interface ProcessEntry {
  stdio: HostStdio;
  /** Open FIFO sockets relaying this process's stdio; closed on delete. */
  sockets: Partial<Record<"stdin" | "stdout" | "stderr", net.Socket>>;
  /** io_type "streaming": the streaming ids containerd will open on this task API for the process. */
  streams: string[];
}

/** How long containerd's stream may wait for the Create or Exec that names it (it may open it first). */
const STREAM_RENDEZVOUS_MS = 30_000;

/** io_type "streaming": containerd names a stream on the sandbox's task API ("<address>?streaming_id=<id>"). */
export function streamingId(stdio: string): string | undefined {
  const q = stdio.indexOf("?");
  return q < 0 ? undefined : (new URLSearchParams(stdio.slice(q + 1)).get("streaming_id") ?? undefined);
}

/** What outlives the daemon about a container: enough to stop it and free its host storage. */
interface ContainerRecord {
  hostBundle: string;
  bundle: GuestBundle;
  namespace: string;
}

interface ContainerEntry {
  hostBundle: string;
  bundle: GuestBundle;
  namespace: string;
  processes: Map<string, ProcessEntry>;
}

export interface ProxyDeps {
  sandboxId: string;
  /** This sandbox's task API address, left in each container's bundle for the shim helper. */
  taskAddress: string;
  /** Where each container's record is kept while it exists (<dir>/<id>/containers), for recovery. */
  recordDir: string;
  share: Share;
  /** The sandbox's live connection to vmm-task. */
  agent: () => TtrpcClient;
  events: EventPublisher;
  nextStorage: () => number;
  log: Logger;
}

const NS_KEY = "containerd-namespace-ttrpc";

/**
 * containerd's task API for one sandbox, served on the host: containerd speaks in host paths (bundle, snapshot
 * mounts, stdio FIFOs), so each call is translated to the guest's view — bundles and mounts through the share,
 * stdio through Streaming streams — and forwarded to vmm-task.
 */
export class TaskProxy {
  readonly containers = new Map<string, ContainerEntry>();
  /** containerd's streaming ids -> the guest stream of the process stdio each one carries. */
  private readonly hostStreams = new Rendezvous<string>();

  constructor(private readonly deps: ProxyDeps) {}

  private task() {
    return this.deps.agent().service(Task);
  }

  private container(id: string): ContainerEntry {
    const c = this.containers.get(id);
    if (!c) throw new TtrpcError(Code.NotFound, `container ${id} not found in sandbox ${this.deps.sandboxId}`);
    return c;
  }

  private guestStdio(id: string, execId: string, s: HostStdio): HostStdio {
    const name = (which: "stdin" | "stdout" | "stderr") =>
      s[which] ? `${STREAM_PREFIX}${stdioStreamId(id, execId, which)}` : "";
    return {
      stdin: name("stdin"),
      stdout: name("stdout"),
      stderr: s.terminal ? "" : name("stderr"),
      terminal: s.terminal,
    };
  }

  private async openChannel(streamId: string): Promise<AnyChannel> {
    const call = this.deps.agent().service(Streaming).stream();
    const it = call[Symbol.asyncIterator]();
    await call.send(initMessage(streamId));
    const ack = await it.next();
    if (ack.done) throw new Error(`guest refused stdio stream ${streamId}`);
    return { send: (m) => call.send(m), messages: it, end: () => call.closeSend() };
  }

  /** Connects the host FIFOs to the guest process's stdio streams. */
  private async attachStdio(id: string, execId: string, stdio: HostStdio): Promise<ProcessEntry> {
    const entry: ProcessEntry = { stdio, sockets: {}, streams: [] };
    const log = this.deps.log;
    for (const which of ["stdin", "stdout", "stderr"] as const) {
      const sid = streamingId(stdio[which]);
      if (!sid || (which === "stderr" && stdio.terminal)) continue;
      this.hostStreams.offer(sid, stdioStreamId(id, execId, which));
      entry.streams.push(sid);
    }
    if (entry.streams.length) return entry;
    try {
      for (const which of ["stdout", "stderr"] as const) {
        if (!stdio[which] || (which === "stderr" && stdio.terminal)) continue;
        const sock = await openFifo(stdio[which], "write");
        entry.sockets[which] = sock;
        sock.on("error", (e) => log.debug(`${id} ${which} fifo: ${e.message}`));
        const ch = await this.openChannel(stdioStreamId(id, execId, which));
        receiveStream(ch, sock).catch((e: Error) => log.debug(`${id} ${which} relay: ${e.message}`));
      }
      if (stdio.stdin) {
        const sock = await openFifo(stdio.stdin, "read");
        entry.sockets.stdin = sock;
        sock.on("error", (e) => log.debug(`${id} stdin fifo: ${e.message}`));
        const ch = await this.openChannel(stdioStreamId(id, execId, "stdin"));
        sendStream(ch, sock).catch((e: Error) => log.debug(`${id} stdin relay: ${e.message}`));
      }
    } catch (err) {
      closeStdio(entry);
      throw err;
    }
    return entry;
  }

  /** Forwards a call about a container this sandbox knows; NotFound otherwise. */
  private known<T>(req: { id: string }, call: () => Promise<T>): Promise<T> {
    this.container(req.id);
    return call();
  }

  handlers(): ServiceHandlers<typeof Task> {
    return {
      create: async (req, ctx) => {
        const problem = validateId("container", req.id);
        if (problem) throw new TtrpcError(Code.InvalidArgument, problem);
        if (this.containers.has(req.id)) throw new TtrpcError(Code.AlreadyExists, `container ${req.id} already exists`);
        const namespace = ctx.metadata.get(NS_KEY)?.[0] ?? "k8s.io";
        let bundle: GuestBundle;
        try {
          bundle = await prepareGuestBundle({
            share: this.deps.share,
            containerId: req.id,
            hostBundle: req.bundle,
            rootfs: req.rootfs,
            nextStorage: this.deps.nextStorage,
          });
        } catch (err) {
          throw new TtrpcError(Code.FailedPrecondition, (err as Error).message);
        }
        const stdio: HostStdio = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
        const entry: ContainerEntry = { hostBundle: req.bundle, bundle, namespace, processes: new Map() };
        try {
          const r = await this.task().create({
            ...req,
            bundle: bundle.guestBundle,
            rootfs: [],
            ...this.guestStdio(req.id, "", stdio),
          });
          entry.processes.set("", await this.attachStdio(req.id, "", stdio));
          await writeTaskLink(req.bundle, { sandboxId: this.deps.sandboxId, taskAddress: this.deps.taskAddress });
          await this.saveRecord(req.id, { hostBundle: req.bundle, bundle, namespace });
          this.containers.set(req.id, entry);
          this.deps.events.publish(namespace, "/tasks/create", TaskCreateSchema, {
            $typeName: "containerd.events.TaskCreate",
            containerId: req.id,
            bundle: req.bundle,
            rootfs: req.rootfs,
            io: { $typeName: "containerd.events.TaskIO", ...stdio },
            checkpoint: req.checkpoint,
            pid: r.pid,
          });
          return r;
        } catch (err) {
          await this.task()
            .delete({ id: req.id, execId: "" })
            .catch(() => undefined);
          await releaseGuestBundle(bundle);
          throw err;
        }
      },
      // Start and exit events come from the guest (GetEvents), which sees them first and keeps them across a
      // daemon restart.
      start: async (req) => this.known(req, () => this.task().start(req)),
      delete: async (req) => {
        const c = this.container(req.id);
        const r = await this.task().delete(req);
        const p = c.processes.get(req.execId);
        if (p) this.closeProcess(p);
        c.processes.delete(req.execId);
        if (!req.execId) {
          for (const rest of c.processes.values()) this.closeProcess(rest);
          this.containers.delete(req.id);
          await rm(this.recordFile(req.id), { force: true });
          await releaseGuestBundle(c.bundle).catch((e: Error) =>
            this.deps.log.warn(`release bundle of ${req.id}: ${e.message}`),
          );
        }
        this.deps.events.publish(c.namespace, "/tasks/delete", TaskDeleteSchema, {
          $typeName: "containerd.events.TaskDelete",
          containerId: req.id,
          id: req.execId || req.id,
          pid: r.pid,
          exitStatus: r.exitStatus,
          exitedAt: r.exitedAt,
        });
        return r;
      },
      exec: async (req) => {
        const c = this.container(req.id);
        const problem = validateId("exec", req.execId);
        if (problem) throw new TtrpcError(Code.InvalidArgument, problem);
        if (c.processes.has(req.execId)) {
          throw new TtrpcError(Code.AlreadyExists, `exec ${req.execId} already exists in container ${req.id}`);
        }
        const stdio: HostStdio = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
        const r = await this.task().exec({ ...req, ...this.guestStdio(req.id, req.execId, stdio) });
        c.processes.set(req.execId, await this.attachStdio(req.id, req.execId, stdio));
        this.deps.events.publish(c.namespace, "/tasks/exec-added", TaskExecAddedSchema, {
          $typeName: "containerd.events.TaskExecAdded",
          containerId: req.id,
          execId: req.execId,
        });
        return r;
      },
      state: async (req) => {
        const c = this.container(req.id);
        const r = await this.task().state(req);
        const stdio = c.processes.get(req.execId)?.stdio;
        // containerd compares these with what it created: report its host paths, not the guest's.
        return { ...r, bundle: c.hostBundle, ...(stdio ?? {}) };
      },
      closeIO: async (req) => {
        const c = this.container(req.id);
        const p = c.processes.get(req.execId);
        if (req.stdin && p?.sockets.stdin) {
          p.sockets.stdin.destroy();
          delete p.sockets.stdin;
        }
        return this.task().closeIO(req);
      },
      connect: async (req) => {
        this.container(req.id);
        const st = await this.task().state({ id: req.id, execId: "" });
        return { shimPid: process.pid, taskPid: st.pid, version: "3" };
      },
      shutdown: async () => ({}),
      checkpoint: async () => {
        throw new TtrpcError(Code.Unimplemented, "checkpoint is not supported for VM sandboxes");
      },
      wait: async (req, ctx) => {
        this.container(req.id);
        return this.task().wait(req, { signal: ctx.signal });
      },
      kill: async (req) => this.known(req, () => this.task().kill(req)),
      pids: async (req) => this.known(req, () => this.task().pids(req)),
      pause: async (req) => this.known(req, () => this.task().pause(req)),
      resume: async (req) => this.known(req, () => this.task().resume(req)),
      resizePty: async (req) => this.known(req, () => this.task().resizePty(req)),
      update: async (req) => this.known(req, () => this.task().update(req)),
      stats: async (req) => this.known(req, () => this.task().stats(req)),
    };
  }

  /**
   * Streaming.Stream on the sandbox's task API (io_type "streaming"): containerd opens one stream per stdio end,
   * maybe before the Create or Exec that names it; once named, it is joined to the guest's stream for that end and
   * messages (data and flow-control credit alike) pass through both ways.
   */
  streamingHandlers(): ServiceHandlers<typeof Streaming> {
    return {
      stream: async (requests, out) => {
        const host: AnyChannel = {
          send: (m) => out.send(m),
          messages: requests[Symbol.asyncIterator](),
          end: () => {},
        };
        const id = await readInit(host);
        await out.send(ackMessage());
        const guest = await this.openChannel(await this.hostStreams.claim(id, STREAM_RENDEZVOUS_MS, "stdio stream"));
        // Stdin ends when containerd ends its side; stdout and stderr when the guest ends its side. Either way the
        // call is over once the guest's side is done.
        pump(host, guest).catch((e: Error) => this.deps.log.debug(`stream ${id} to the guest: ${e.message}`));
        await pump(guest, host);
      },
    };
  }

  /** The containerd namespace a container was created in (events from the guest carry none of their own). */
  namespaceOf(containerId: string): string | undefined {
    return this.containers.get(containerId)?.namespace;
  }

  /** Closes a process's FIFO relays and takes back streaming ids containerd never opened. */
  private closeProcess(p: ProcessEntry): void {
    closeStdio(p);
    for (const sid of p.streams) this.hostStreams.withdraw(sid);
  }

  private recordFile(id: string): string {
    return path.join(this.deps.recordDir, `${id}.json`);
  }

  private async saveRecord(id: string, rec: ContainerRecord): Promise<void> {
    await mkdir(this.deps.recordDir, { recursive: true });
    await writeJsonAtomic(this.recordFile(id), rec);
  }

  /**
   * After a daemon restart: containerd saw every task connection of this sandbox drop and recorded its containers
   * as exited (255), so the ones a previous daemon created are stopped in the guest and their host storage freed.
   * Returns the ids it stopped.
   */
  async reapOrphans(): Promise<string[]> {
    const names = await readdir(this.deps.recordDir).catch(() => [] as string[]);
    const reaped: string[] = [];
    for (const name of names.filter((n) => n.endsWith(".json"))) {
      const id = name.slice(0, -".json".length);
      const file = path.join(this.deps.recordDir, name);
      let rec: ContainerRecord;
      try {
        rec = JSON.parse(await readFile(file, "utf8")) as ContainerRecord;
      } catch (err) {
        this.deps.log.warn(`container record ${file} is unreadable (${(err as Error).message}); removing it`);
        await rm(file, { force: true });
        continue;
      }
      const task = this.task();
      await task.kill({ id, execId: "", signal: 9, all: true }, { timeoutMs: 5000 }).catch(() => undefined);
      await task.wait({ id, execId: "" }, { timeoutMs: 5000 }).catch(() => undefined);
      await task.delete({ id, execId: "" }, { timeoutMs: 5000 }).catch(() => undefined);
      await releaseGuestBundle(rec.bundle).catch((e: Error) => this.deps.log.warn(`release ${id}: ${e.message}`));
      await rm(file, { force: true });
      reaped.push(id);
    }
    return reaped;
  }

  /** After the VM is gone: close relays and unmount every container's storage. */
  async releaseAll(): Promise<void> {
    for (const [id, c] of this.containers) {
      for (const p of c.processes.values()) this.closeProcess(p);
      await releaseGuestBundle(c.bundle).catch((e: Error) => this.deps.log.warn(`release ${id}: ${e.message}`));
    }
    this.containers.clear();
    // Containers a previous daemon created: their storage is still mounted in the share.
    for (const name of await readdir(this.deps.recordDir).catch(() => [] as string[])) {
      const file = path.join(this.deps.recordDir, name);
      const rec = await readFile(file, "utf8").then(
        (t) => JSON.parse(t) as ContainerRecord,
        () => undefined,
      );
      if (rec)
        await releaseGuestBundle(rec.bundle).catch((e: Error) => this.deps.log.warn(`release ${name}: ${e.message}`));
      await rm(file, { force: true });
    }
  }
}

function closeStdio(p: ProcessEntry): void {
  for (const s of Object.values(p.sockets)) s?.destroy();
  p.sockets = {};
}

/** Forwards every message of one side to the other; ends the other side when this one ends. */
async function pump(from: AnyChannel, to: AnyChannel): Promise<void> {
  for (;;) {
    const r = await from.messages.next();
    if (r.done) {
      to.end();
      return;
    }
    await to.send(r.value);
  }
}
