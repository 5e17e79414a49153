import { rm } from "node:fs/promises";
import net from "node:net";
import type { Logger } from "../../log/log.ts";
import { Task } from "../../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Streaming } from "../../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { SandboxService } from "../../protos/gen/kuasar/sandbox_pb.ts";
import { openStream } from "../../streaming/open.ts";
import { tracing } from "../../trace/host.ts";
import { traceServer } from "../../trace/ttrpc-server.ts";
import { heldUntil, type TtrpcClient, TtrpcServer } from "../../ttrpc/index.ts";
import { syncGuestClock, traceGuest } from "../agent.ts";
import type { EventPublisher } from "../events.ts";
import { GuestEventForwarder } from "../guest-events.ts";
import { PortForwarder } from "../network/port-forward.ts";
import type { DiskHost } from "../storage/block.ts";
import { PodDisks } from "../storage/pod-disks.ts";
import { shareLayout } from "../storage/share.ts";
import { TaskProxy } from "../task-proxy/proxy.ts";
import type { SandboxRecord } from "./record.ts";
import { containerRecords, type PodTaps, taskSocketOf } from "./resources.ts";
import type { VmResizer } from "./vm-resize.ts";

const CLOCK_SYNC_MS = 60_000;

/** A sandbox's task API as it is served, with what stopping and releasing the sandbox need of it. */
export interface Served {
  agent: TtrpcClient;
  proxy: TaskProxy;
  /** Stops serving: the clock sync, the event pump, the agent connection, port-forward and the task socket. */
  close(): Promise<void>;
}

/**
 * Serves containerd's task API for the sandbox at <dir>/task.sock and keeps the guest clock (synced every minute),
 * the guest's events and (for a pod with a netns) containerd's PortForward flowing.
 */
export async function serve(
  rec: SandboxRecord,
  dir: string,
  agent: TtrpcClient,
  pod: PodTaps | undefined,
  deps: {
    events: EventPublisher;
    log: Logger;
    vm: DiskHost;
    resizer?: VmResizer;
    /** The boot's clock sync: task calls wait for it, so no container starts on the guest's unset clock. */
    clockSet?: Promise<void>;
  },
): Promise<Served> {
  const { log } = deps;
  const sock = taskSocketOf(dir);
  const proxy = new TaskProxy({
    sandboxId: rec.id,
    taskAddress: `ttrpc+unix://${sock}`,
    records: containerRecords(dir, log),
    share: shareLayout(dir),
    agent: () => agent,
    events: deps.events,
    nextStorage: () => rec.nextStorage++,
    disks: new PodDisks(deps.vm),
    ...(deps.resizer ? { resizer: deps.resizer } : {}),
    log,
  });
  // While tracing is on each task API call is a span, and the guest's spans are drained back (docs/operating.md).
  const handlers = deps.clockSet ? heldUntil(proxy.handlers(), deps.clockSet) : proxy.handlers();
  const tasks = traceServer(Task, handlers, tracing, { "sandbox.id": rec.id });
  traceGuest(agent, rec.id);
  const server = new TtrpcServer()
    .register(Task, tasks)
    .registerAs("containerd.task.v2.Task", Task, tasks)
    .register(Streaming, proxy.streamingHandlers());
  await rm(sock, { force: true });
  const listener = net.createServer();
  server.serve(listener);
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(sock, resolve);
  });
  const sync = () => syncGuestClock(agent).catch((e: Error) => log.debug(`clock sync: ${e.message}`));
  const clock = setInterval(sync, CLOCK_SYNC_MS);
  clock.unref();
  // containerd's PortForward dials localhost in the pod's netns: carried into the guest from there.
  const portForwarder = pod
    ? await PortForwarder.start({ nsPath: pod.nsPath, openStream: (id) => openStream(agent, id), log }).catch(
        (e: Error) => {
          log.warn(`${e.message}; port-forward into this pod is unavailable`);
          return undefined;
        },
      )
    : undefined;
  let open = true;
  void pumpGuestEvents(rec.id, agent, proxy, deps.events, log, () => open);
  return {
    agent,
    proxy,
    async close() {
      open = false;
      clearInterval(clock);
      agent.close();
      await portForwarder?.close();
      await server.close();
    },
  };
}

/** Task start, exit and OOM events are the guest's: they reach containerd through the daemon, until `open` turns false. */
async function pumpGuestEvents(
  id: string,
  agent: TtrpcClient,
  proxy: TaskProxy,
  events: EventPublisher,
  log: Logger,
  open: () => boolean,
): Promise<void> {
  const svc = agent.service(SandboxService);
  // Admitted only for this sandbox's containers, in the namespace containerd created each in; paced.
  const guest = new GuestEventForwarder(events, id, (c) => proxy.namespaceOf(c), log);
  while (open()) {
    const ev = await svc.getEvents({}).catch(() => undefined);
    if (!ev) return;
    await guest.forward(ev);
  }
}
