import { createWriteStream } from "node:fs";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { metricsAny } from "../../cgroups/metrics.ts";
import { type GuestDisk, parseDiskMounts } from "../../contract/block.ts";
import type { OciProcess } from "../../contract/oci.ts";
import { Task } from "../../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Status } from "../../protos/gen/containerd/types/task/task_pb.ts";
import { STREAM_PREFIX } from "../../streaming/stdio-stream.ts";
import { traceServer } from "../../trace/ttrpc-server.ts";
import { Code, type ServiceHandlers, TtrpcError } from "../../ttrpc/index.ts";
import type { ContainerManager } from "../containers.ts";
import { TaskError } from "../errors.ts";
import type { TaskProcess, TaskStatus } from "../process.ts";
import type { StreamHub } from "../stream-hub.ts";
import { guestTracing } from "./tracing.ts";

const STATUS: Record<TaskStatus, Status> = {
  UNKNOWN: Status.UNKNOWN,
  CREATED: Status.CREATED,
  RUNNING: Status.RUNNING,
  STOPPED: Status.STOPPED,
  PAUSED: Status.PAUSED,
};

/** TaskErrors carry the gRPC code name containerd expects; anything else is Internal. */
async function mapped<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof TtrpcError) throw e;
    if (e instanceof TaskError) throw new TtrpcError(Code[e.code], e.message);
    throw new TtrpcError(Code.Internal, (e as Error).message);
  }
}

/**
 * Hands a process's stdio to the host: "stream:<id>" names are served through Streaming (the StreamHub);
 * any other name is a path in the guest, appended to (stdout/stderr) as a plain file.
 */
function offerStdio(hub: StreamHub, p: TaskProcess, names: { stdin: string; stdout: string; stderr: string }): void {
  const streamId = (name: string) => (name.startsWith(STREAM_PREFIX) ? name.slice(STREAM_PREFIX.length) : undefined);
  const stdout = p.terminal ? p.pty : p.stdio.stdout;
  const stdin = p.terminal ? p.pty : p.stdio.stdin;
  for (const [name, stream] of [
    [names.stdout, stdout],
    [names.stderr, p.terminal ? undefined : p.stdio.stderr],
  ] as const) {
    if (!name || !stream) continue;
    const id = streamId(name);
    if (id) hub.offer(id, { kind: "source", stream });
    else stream.pipe(createWriteStream(name, { flags: "a" }));
  }
  const inId = names.stdin ? streamId(names.stdin) : undefined;
  if (inId && stdin) hub.offer(inId, { kind: "sink", stream: stdin });
}

function withdrawStdio(hub: StreamHub, names: Array<string | undefined>): void {
  for (const n of names) if (n?.startsWith(STREAM_PREFIX)) hub.withdraw(n.slice(STREAM_PREFIX.length));
}

/** containerd's Task API (served as both v2 and v3) over the ContainerManager; a traced request gets a span. */
export function taskService(
  mgr: ContainerManager,
  hub: StreamHub,
  /** The daemon's Shutdown (containerd's own Shutdown stops at the host proxy): power the VM off. */
  onShutdown: () => void,
): ServiceHandlers<typeof Task> {
  return traceServer(Task, taskHandlers(mgr, hub, onShutdown), guestTracing);
}

function taskHandlers(mgr: ContainerManager, hub: StreamHub, onShutdown: () => void): ServiceHandlers<typeof Task> {
  return {
    create: (req) =>
      mapped(async () => {
        const io = { terminal: req.terminal, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr };
        // The host mounted the rest into the share: what the rootfs list carries are disks it hot-plugged.
        let disks: GuestDisk[];
        try {
          disks = parseDiskMounts(req.rootfs);
        } catch (e) {
          throw new TaskError("InvalidArgument", `container ${req.id}: ${(e as Error).message}`);
        }
        // The host wrote containerd's spec: the manager fixes host namespace paths, cgroup driver and LSM labels up
        // in a bundle of its own.
        const pid = await mgr.create(req.id, req.bundle, io, disks);
        offerStdio(hub, mgr.process(req.id), io);
        return { pid };
      }),
    start: (req) =>
      mapped(async () => {
        const pid = await mgr.start(req.id, req.execId);
        if (req.execId) {
          const st = mgr.state(req.id, req.execId);
          offerStdio(hub, mgr.process(req.id, req.execId), st);
        }
        return { pid };
      }),
    exec: (req) =>
      mapped(async () => {
        let spec: OciProcess;
        try {
          spec = JSON.parse(Buffer.from(req.spec?.value ?? []).toString("utf8")) as OciProcess;
        } catch (e) {
          throw new TaskError(
            "InvalidArgument",
            `exec ${req.execId}: the process spec is not JSON: ${(e as Error).message}`,
          );
        }
        const io = { terminal: req.terminal, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr };
        await mgr.exec(req.id, req.execId, spec, io);
        return {};
      }),
    delete: (req) =>
      mapped(async () => {
        const st = mgr.state(req.id, req.execId);
        const r = await mgr.delete(req.id, req.execId);
        withdrawStdio(hub, [st.stdin, st.stdout, st.stderr]);
        return { pid: r.pid, exitStatus: r.exitStatus, exitedAt: r.exitedAt && timestampFromDate(r.exitedAt) };
      }),
    state: (req) =>
      mapped(() => {
        const st = mgr.state(req.id, req.execId);
        return {
          id: st.id,
          execId: st.execId,
          bundle: st.bundle,
          pid: st.pid,
          status: STATUS[st.status],
          stdin: st.stdin,
          stdout: st.stdout,
          stderr: st.stderr,
          terminal: st.terminal,
          exitStatus: st.exitStatus,
          exitedAt: st.exitedAt && timestampFromDate(st.exitedAt),
        };
      }),
    kill: (req) =>
      mapped(async () => {
        await mgr.kill(req.id, req.execId, req.signal, req.all);
        return {};
      }),
    wait: (req, ctx) =>
      mapped(async () => {
        const exit = await Promise.race([
          mgr.wait(req.id, req.execId),
          new Promise<never>((_, reject) =>
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }),
          ),
        ]);
        return { exitStatus: exit.exitStatus, exitedAt: timestampFromDate(exit.exitedAt) };
      }),
    pids: (req) => mapped(async () => ({ processes: (await mgr.pids(req.id)).map((p) => ({ pid: p.pid })) })),
    pause: (req) =>
      mapped(async () => {
        await mgr.pause(req.id);
        return {};
      }),
    resume: (req) =>
      mapped(async () => {
        await mgr.resume(req.id);
        return {};
      }),
    update: (req) =>
      mapped(async () => {
        const resources = JSON.parse(Buffer.from(req.resources?.value ?? []).toString("utf8") || "{}") as object;
        await mgr.update(req.id, resources);
        return {};
      }),
    closeIO: (req) =>
      mapped(() => {
        mgr.closeIO(req.id, req.execId);
        return {};
      }),
    resizePty: (req) =>
      mapped(() => {
        mgr.resizePty(req.id, req.execId, req.width, req.height);
        return {};
      }),
    connect: (req) => mapped(() => ({ shimPid: process.pid, taskPid: mgr.state(req.id).pid, version: "3" })),
    shutdown: async () => {
      // Answer first: the agent exits (and init powers the VM off) right after.
      setImmediate(onShutdown);
      return {};
    },
    stats: (req) =>
      mapped(async () => {
        const stats = await mgr.stats(req.id);
        // The guest kernel mounts only cgroup2; v1 happens only when the agent runs on a v1 host (tests).
        if (stats.version !== 2) {
          throw new TaskError("FailedPrecondition", `container ${req.id}: stats are reported for cgroup v2 only`);
        }
        return { stats: metricsAny(stats) };
      }),
    checkpoint: async () => {
      throw new TtrpcError(Code.Unimplemented, "checkpoint is not supported in a VM sandbox");
    },
  };
}
