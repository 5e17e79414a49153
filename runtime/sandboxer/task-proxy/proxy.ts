import type net from "node:net";
import { create, type MessageShape } from "@bufbuild/protobuf";
import { diskMount } from "../../contract/block.ts";
import { validateId } from "../../contract/ids.ts";
import { writeTaskLink } from "../../contract/task-link.ts";
import type { Logger } from "../../log/log.ts";
import { TaskCreateSchema, TaskDeleteSchema, TaskExecAddedSchema } from "../../protos/gen/containerd/events/task_pb.ts";
import { type DeleteResponseSchema, Task } from "../../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import type { Streaming } from "../../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { MountSchema } from "../../protos/gen/containerd/types/mount_pb.ts";
import { Status } from "../../protos/gen/containerd/types/task/task_pb.ts";
import { ProtocolViolation } from "../../streaming/messages.ts";
import { openStream } from "../../streaming/open.ts";
import { relayStreams } from "../../streaming/relay.ts";
import { Rendezvous } from "../../streaming/rendezvous.ts";
import {
  type AnyChannel,
  ackMessage,
  readInit,
  receiveStream,
  STREAM_PREFIX,
  sendStream,
  stdioStreamId,
} from "../../streaming/stdio-stream.ts";
import { Code, type ServiceHandlers, type TtrpcClient, TtrpcError } from "../../ttrpc/index.ts";
import type { EventPublisher } from "../events.ts";
import { resourcesInBundle, resourcesInUpdate, type VmResizer } from "../sandbox/vm-resize.ts";
import { type DiskHost, unplugDisks } from "../storage/block.ts";
import { type GuestBundle, prepareGuestBundle, releaseGuestBundle, UnsupportedSpec } from "../storage/guest-bundle.ts";
import type { ShareLayout } from "../storage/share.ts";
import { openFifo } from "./fifo.ts";
import type { ContainerRecords } from "./records.ts";

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

interface ContainerEntry {
  hostBundle: string;
  bundle: GuestBundle;
  namespace: string;
  processes: Map<string, ProcessEntry>;
  /** The guest's answer to a Delete of the container in flight: the task exists for containerd until it returns. */
  deleting?: Promise<GuestExit>;
}

type GuestExit = Pick<MessageShape<typeof DeleteResponseSchema>, "pid" | "exitStatus" | "exitedAt">;

export interface ProxyDeps {
  sandboxId: string;
  /** This sandbox's task API address, left in each container's bundle for the shim helper. */
  taskAddress: string;
  /** Each container's record while it exists (<dir>/<id>/containers), for recovery. */
  records: ContainerRecords;
  share: ShareLayout;
  /** The sandbox's live connection to vmm-task. */
  agent: () => TtrpcClient;
  events: EventPublisher;
  nextStorage: () => number;
  /** The sandbox's VM: a block rootfs and raw block devices are hot-plugged into it as disks. */
  disks?: DiskHost;
  /** Grows the VM when its containers' limits ask for more vCPUs or memory (Create, Update). */
  resizer?: VmResizer;
  /** How long removing a disk waits for the guest to release it; default DISK_RELEASE_MS. */
  diskTimeoutMs?: number;
  log: Logger;
}

/** A guest kernel releases an unplugged disk within a second or two; one that takes longer is cut off from it. */
export const DISK_RELEASE_MS = 15_000;
/** How long the guest's Delete of a container with disks may take (runc delete, unmounting its disks). */
const GUEST_DELETE_MS = 60_000;

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

  private openChannel(streamId: string): Promise<AnyChannel> {
    return openStream(this.deps.agent(), streamId);
  }

  /** The lines about one container or exec: its ids as fields. */
  private logFor(id: string, execId = ""): Logger {
    return this.deps.log.with({ container: id, exec: execId || undefined });
  }

  /** Connects the host FIFOs to the guest process's stdio streams. */
  private async attachStdio(id: string, execId: string, stdio: HostStdio): Promise<ProcessEntry> {
    const entry: ProcessEntry = { stdio, sockets: {}, streams: [] };
    const log = this.logFor(id, execId);
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
        const name = stdioStreamId(id, execId, which);
        const ch = await this.openChannel(name);
        receiveStream(ch, sock, name).catch((e: Error) => log.debug(`${id} ${which} relay: ${e.message}`));
      }
      if (stdio.stdin) {
        const sock = await openFifo(stdio.stdin, "read");
        entry.sockets.stdin = sock;
        sock.on("error", (e) => log.debug(`${id} stdin fifo: ${e.message}`));
        const name = stdioStreamId(id, execId, "stdin");
        const ch = await this.openChannel(name);
        sendStream(ch, sock, name).catch((e: Error) => log.debug(`${id} stdin relay: ${e.message}`));
      }
    } catch (err) {
      closeStdio(entry);
      throw err;
    }
    return entry;
  }

  /**
   * A new container's limits may ask more of the VM than its pod did at boot (a pod without pod-level limits).
   * Growing is best effort here: the container still runs if the VM cannot grow, as it would have before.
   */
  private async growFor(id: string, hostBundle: string): Promise<void> {
    const resizer = this.deps.resizer;
    if (!resizer) return;
    try {
      await resizer.setContainer(id, await resourcesInBundle(hostBundle));
    } catch (err) {
      this.logFor(id).warn(`container ${id}: the VM was not grown for its limits: ${(err as Error).message}`);
    }
  }

  /** Forwards a call about a container this sandbox knows; NotFound otherwise. */
  private known<T>(req: { id: string }, call: () => Promise<T>): Promise<T> {
    this.container(req.id);
    return call();
  }

  handlers(): ServiceHandlers<typeof Task> {
    return {
      create: async (req, ctx) => {
        const t0 = Date.now();
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
            ...(this.deps.disks ? { disks: this.deps.disks } : {}),
            diskTimeoutMs: this.diskTimeoutMs(),
          });
        } catch (err) {
          const code = err instanceof UnsupportedSpec ? Code.InvalidArgument : Code.FailedPrecondition;
          this.logFor(req.id).warn(`container ${req.id}: create failed: ${(err as Error).message}`);
          throw new TtrpcError(code, (err as Error).message);
        }
        await this.growFor(req.id, req.bundle);
        const stdio: HostStdio = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
        const entry: ContainerEntry = { hostBundle: req.bundle, bundle, namespace, processes: new Map() };
        try {
          const r = await this.task().create({
            ...req,
            bundle: bundle.guestBundle,
            // The host mounted everything else into the share; disks are the guest's to find and mount.
            rootfs: (bundle.disks ?? []).map((d) => create(MountSchema, diskMount(d.guest))),
            ...this.guestStdio(req.id, "", stdio),
          });
          entry.processes.set("", await this.attachStdio(req.id, "", stdio));
          await writeTaskLink(req.bundle, { sandboxId: this.deps.sandboxId, taskAddress: this.deps.taskAddress });
          await this.deps.records.save(req.id, { hostBundle: req.bundle, bundle, namespace });
          this.containers.set(req.id, entry);
          this.deps.events.publish(this.deps.sandboxId, namespace, "/tasks/create", TaskCreateSchema, {
            $typeName: "containerd.events.TaskCreate",
            containerId: req.id,
            bundle: req.bundle,
            rootfs: req.rootfs,
            io: { $typeName: "containerd.events.TaskIO", ...stdio },
            checkpoint: req.checkpoint,
            pid: r.pid,
          });
          this.logFor(req.id).info(`container ${req.id} created (pid ${r.pid})`, {
            pid: r.pid,
            duration_ms: Date.now() - t0,
          });
          return r;
        } catch (err) {
          this.logFor(req.id).warn(`container ${req.id}: create failed: ${(err as Error).message}`, {
            duration_ms: Date.now() - t0,
          });
          this.deps.resizer?.forget(req.id);
          await this.task()
            .delete({ id: req.id, execId: "" })
            .catch(() => undefined);
          await this.unplug(req.id, bundle);
          await releaseGuestBundle(this.deps.share, bundle).catch(() => undefined);
          throw err;
        }
      },
      // Start and exit events come from the guest (GetEvents), which sees them first and keeps them across a
      // daemon restart.
      start: async (req) =>
        this.known(req, async () => {
          const r = await this.task().start(req);
          const what = req.execId ? `exec ${req.execId} of container ${req.id}` : `container ${req.id}`;
          this.logFor(req.id, req.execId)[req.execId ? "debug" : "info"](`${what} started (pid ${r.pid})`, {
            pid: r.pid,
          });
          return r;
        }),
      delete: async (req) => {
        const c = this.container(req.id);
        const disks = !req.execId && c.bundle.disks?.length;
        const guestDelete = this.task()
          .delete(req, disks ? { timeoutMs: GUEST_DELETE_MS } : {})
          .catch((err: Error) => {
            // A guest that does not know the container (it lost it, or says so) or does not answer must not keep
            // its disks attached.
            const gone =
              err instanceof TtrpcError && (err.code === Code.NotFound || err.code === Code.DeadlineExceeded);
            if (!disks || !gone) throw err;
            this.logFor(req.id).warn(
              `container ${req.id}: the guest's delete failed (${err.message}); freeing it anyway`,
            );
            return { pid: 0, exitStatus: 255, exitedAt: undefined };
          });
        if (!req.execId) c.deleting = guestDelete;
        let r: GuestExit;
        try {
          r = await guestDelete;
        } catch (err) {
          delete c.deleting;
          throw err;
        }
        const p = c.processes.get(req.execId);
        if (p) this.closeProcess(p);
        c.processes.delete(req.execId);
        if (!req.execId) {
          for (const rest of c.processes.values()) this.closeProcess(rest);
          this.deps.resizer?.forget(req.id);
          // Known (as stopped) until its host storage is released too: containerd's Delete has not returned yet.
          try {
            // The guest has unmounted the container's disks (its delete does that); now the VM lets go of them.
            await this.unplug(req.id, c.bundle);
            await this.deps.records.release(req.id, {
              hostBundle: c.hostBundle,
              bundle: c.bundle,
              namespace: c.namespace,
            });
          } finally {
            this.containers.delete(req.id);
          }
        }
        const what = req.execId ? `exec ${req.execId} of container ${req.id}` : `container ${req.id}`;
        this.logFor(req.id, req.execId)[req.execId ? "debug" : "info"](
          `${what} deleted (exit status ${r.exitStatus})`,
          { exit_status: r.exitStatus },
        );
        this.deps.events.publish(this.deps.sandboxId, c.namespace, "/tasks/delete", TaskDeleteSchema, {
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
        this.logFor(req.id, req.execId).debug(`exec ${req.execId} added to container ${req.id}`);
        this.deps.events.publish(this.deps.sandboxId, c.namespace, "/tasks/exec-added", TaskExecAddedSchema, {
          $typeName: "containerd.events.TaskExecAdded",
          containerId: req.id,
          execId: req.execId,
        });
        return r;
      },
      state: async (req) => {
        const c = this.container(req.id);
        const stdio = c.processes.get(req.execId)?.stdio;
        const r = await this.task()
          .state(req)
          .catch(async (err: Error) => {
            // The guest forgets a container part-way through deleting it. Until containerd's Delete returns, the
            // task is stopped, not missing: CRI's StopContainer reads "not found" as "already gone" and would race
            // the exit it has not recorded yet.
            if (req.execId || !c.deleting || !(err instanceof TtrpcError && err.code === Code.NotFound)) throw err;
            const exit = await c.deleting.catch(() => Promise.reject(err));
            return {
              id: req.id,
              execId: "",
              pid: exit.pid,
              status: Status.STOPPED,
              exitStatus: exit.exitStatus,
              exitedAt: exit.exitedAt,
            };
          });
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
      update: async (req) =>
        this.known(req, async () => {
          // The VM grows first, so the guest's runc finds the CPUs and memory the new limits name.
          await this.deps.resizer?.setContainer(req.id, resourcesInUpdate(req.resources)).catch((err: Error) => {
            throw new TtrpcError(Code.FailedPrecondition, `update container ${req.id}: ${err.message}`);
          });
          return this.task().update(req);
        }),
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
        await relayStreams(host, guest, id).catch((e: Error) => {
          if (e instanceof ProtocolViolation) this.deps.log.warn(`sandbox ${this.deps.sandboxId}: ${e.message}`);
          throw e;
        });
      },
    };
  }

  /** The containerd namespace a container was created in (events from the guest carry none of their own). */
  namespaceOf(containerId: string): string | undefined {
    return this.containers.get(containerId)?.namespace;
  }

  private diskTimeoutMs(): number {
    return this.deps.diskTimeoutMs ?? DISK_RELEASE_MS;
  }

  /**
   * Removes a container's disks from the VM, each waited for at most diskTimeoutMs. A failure is logged, not
   * thrown: the disk then stays with the VM, which releases it when it ends.
   */
  private async unplug(id: string, bundle: Pick<GuestBundle, "disks">): Promise<void> {
    const disks = bundle.disks ?? [];
    if (!disks.length || !this.deps.disks) return;
    try {
      const cutOff = await unplugDisks(this.deps.disks, disks, this.diskTimeoutMs());
      if (cutOff.length) {
        this.logFor(id).warn(
          `container ${id}: the guest kept disk(s) ${cutOff.join(", ")}; their host files are closed`,
        );
      }
    } catch (err) {
      this.logFor(id).warn(`container ${id}: ${(err as Error).message}; they go with the VM`);
    }
  }

  /** Closes a process's FIFO relays and takes back streaming ids containerd never opened. */
  private closeProcess(p: ProcessEntry): void {
    closeStdio(p);
    for (const sid of p.streams) this.hostStreams.withdraw(sid);
  }

  /**
   * After a daemon restart: containerd saw every task connection of this sandbox drop and recorded its containers
   * as exited (255), so the ones a previous daemon created are stopped in the guest and their host storage freed.
   * Returns the ids it stopped.
   */
  async reapOrphans(): Promise<string[]> {
    const reaped: string[] = [];
    for (const { id, rec } of await this.deps.records.list()) {
      const task = this.task();
      await task.kill({ id, execId: "", signal: 9, all: true }, { timeoutMs: 5000 }).catch(() => undefined);
      await task.wait({ id, execId: "" }, { timeoutMs: 5000 }).catch(() => undefined);
      await task.delete({ id, execId: "" }, { timeoutMs: 5000 }).catch(() => undefined);
      await this.unplug(id, rec.bundle);
      await this.deps.records.release(id, rec);
      reaped.push(id);
    }
    return reaped;
  }

  /** After the VM is gone: close relays and free every container's storage, recorded by this daemon or an earlier one. */
  async releaseAll(): Promise<void> {
    for (const c of this.containers.values()) for (const p of c.processes.values()) this.closeProcess(p);
    this.containers.clear();
    await this.deps.records.releaseAll();
  }
}

function closeStdio(p: ProcessEntry): void {
  for (const s of Object.values(p.sockets)) s?.destroy();
  p.sockets = {};
}
