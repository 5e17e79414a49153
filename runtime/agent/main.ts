import { mkdir, rm } from "node:fs/promises";
import net from "node:net";
import type { Duplex } from "node:stream";
import { parseArgs } from "node:util";
import { startupSnapshot } from "node:v8";
import type { TaskParams } from "../contract/kernel-params.ts";
import { PORT_FORWARD_PREFIX } from "../contract/port-forward.ts";
import { AGENT_PORT } from "../contract/ports.ts";
import { agentReadyLine } from "../contract/readiness.ts";
import { configureLog, logger, writeStderrSync } from "../log/log.ts";
import { heapAddon } from "../native/ns/heap.ts";
import { Task } from "../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Streaming } from "../protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { SandboxService } from "../protos/gen/kuasar/sandbox_pb.ts";
import { TtrpcServer } from "../ttrpc/index.ts";
import { readCmdline } from "./cmdline.ts";
import { serveDebugConsole } from "./console.ts";
import { ContainerManager } from "./containers.ts";
import { EventQueue } from "./event-queue.ts";
import { ExitMonitor } from "./exit-monitor.ts";
import { rootIsInitramfs } from "./mounts.ts";
import { listenForHost, RefusalLog } from "./peer-check.ts";
import { setupPid1 } from "./pid1.ts";
import { PortForwards } from "./port-forward.ts";
import { shutdownGuest } from "./power-off.ts";
import { Runc } from "./runc.ts";
import { setupSandboxNamespaces } from "./sandbox-ns.ts";
import { sandboxService } from "./services/sandbox-service.ts";
import { taskService } from "./services/task-service.ts";
import { shareStartupData } from "./startup-data.ts";
import { StreamHub } from "./stream-hub.ts";
import { queueTaskEvents } from "./task-events.ts";
import { uptimeMs } from "./uptime.ts";

// The agent's lines pad the level like Kuasar's (env_logger), and go to the console without a stream.
configureLog({ padLevel: true, write: writeStderrSync, journal: false });
const log = logger("vmm_task");

/**
 * vmm-task: in the guest it is started by the C init (PID 1), sets the VM up and serves ttrpc on vsock AGENT_PORT.
 * `--listen unix:<path>` serves on a unix socket instead and skips the PID 1 duties, so the same agent runs on
 * a host (under the init in subreaper mode) for tests. `--startup-data <file>`: the V8 startup data to map over node's
 * copy of it once serving (startup-data.ts); the guest's init passes the image's.
 */
async function main(argv: string[]): Promise<void> {
  // Where the agent's start goes, on its serving line: ms after node started, at main and at the end of each step.
  const marks: string[] = [`main ${Math.round(uptimeMs())}`];
  const mark = (what: string) => marks.push(`${what} ${Math.round(uptimeMs())}`);
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: "string" },
      "state-dir": { type: "string", default: "/run/vmm-task" },
      "runc-root": { type: "string", default: "/run/runc" },
      "log-level": { type: "string" },
      "startup-data": { type: "string" },
    },
  });
  const guest = values.listen === undefined;
  const params = guestParams(guest);
  configureLog({ level: (values["log-level"] as typeof params.logLevel | undefined) ?? params.logLevel });
  for (const w of params.warnings) log.warn(w);
  mark("cmdline");

  if (guest) {
    setupPid1(params.sharefsType, { log });
    log.info(`guest ready: share ${params.sharefsType} mounted, cgroup2 set up`);
    mark("pid1");
  }
  const stateDir = values["state-dir"]!;
  await mkdir(stateDir, { recursive: true });

  const manager = new ContainerManager({
    runc: new Runc({ root: values["runc-root"], logDir: stateDir }),
    // Booted from kuasar.initrd the root cannot be pivoted away from.
    noPivot: guest && rootIsInitramfs(),
    exits: ExitMonitor.fromInit(),
    stateDir,
    log: log.child("containers"),
  });
  const events = new EventQueue();
  queueTaskEvents(manager, events);
  const portForwards = new PortForwards();
  const hub = new StreamHub().route(PORT_FORWARD_PREFIX, (ch, id) => portForwards.serve(ch, id));
  const tasks = taskService(manager, hub, () => void stop("Shutdown request"));
  const server = new TtrpcServer()
    .register(Task, tasks)
    .registerAs("containerd.task.v2.Task", Task, tasks)
    .register(SandboxService, sandboxService({ events, debug: params.debug, setupPod: (c) => setupPod(c) }))
    .register(Streaming, { stream: (requests, out) => hub.serve(requests, (m) => out.send(m)) });

  mark("services");
  if (guest) {
    // Both ports serve only the host: a privileged source port over vhost-vsock (see peer-check.ts).
    log.info(
      params.hybridVsock
        ? "task.hybrid_vsock: host connections are served from any source port (the VMM's socket guards them)"
        : "vhost-vsock: host connections are served only from a privileged source port (<= 1023)",
    );
    const refusals = new RefusalLog(log);
    const forHost = (port: number, serve: (s: Duplex) => void) =>
      listenForHost(port, { hybrid: params.hybridVsock, log, refusals }, serve);
    forHost(AGENT_PORT, (s) => server.handleConnection(s));
    serveDebugConsole(params, forHost, log);
  } else {
    const path = values.listen!.replace(/^unix:/, "");
    await rm(path, { force: true });
    const l = net.createServer();
    server.serve(l);
    await new Promise<void>((resolve) => l.listen(path, resolve));
  }
  // Printed whatever the log level: over hybrid vsock the host waits for this console line before it dials.
  writeStderrSync(agentReadyLine(guest ? undefined : values.listen));
  // The guest's own measure of the agent's start (uptimeMs() counts from node's start, snapshot or not);
  // bench/sandbox-start.ts reads it.
  log.info(`serving ${Math.round(uptimeMs())} ms after node started (${marks.join(", ")})`);
  if (values["startup-data"]) void shareStartupData(values["startup-data"], log);
  trimHeap();

  async function stop(signal: string): Promise<void> {
    log.info(`${signal}: stopping containers`);
    await server.shutdown().catch(() => undefined);
    if (guest) await shutdownGuest(manager, { log });
    await manager.shutdown();
    process.exit(0);
  }
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

/** The task.* kernel parameters; a host (tests) has none, nor a guest whose /proc is not mounted. */
function guestParams(guest: boolean): TaskParams {
  try {
    return readCmdline(guest ? "/proc/cmdline" : "/dev/null");
  } catch {
    return readCmdline("/dev/null");
  }
}

/** SetupSandbox: the pod's persistent ipc/uts namespaces, hostname and sysctls. */
async function setupPod(config: { hostname?: string; linux?: { sysctls?: Record<string, string> } }): Promise<void> {
  await setupSandboxNamespaces({
    ...(config.hostname ? { hostname: config.hostname } : {}),
    ...(config.linux?.sysctls ? { sysctls: config.linux.sysctls } : {}),
  });
  trimHeap();
}

/**
 * Starting and setting up the pod leave freed C heap (node's own start, the snapshot's buffers) that malloc keeps;
 * an idle agent gives it back (about 1 MiB of RssAnon, measured on the host). Memory is not worth failing over.
 */
function trimHeap(): void {
  try {
    heapAddon().trimHeap();
  } catch (err) {
    log.debug(`malloc_trim: ${(err as Error).message}`);
  }
}

function run(args: string[]): void {
  main(args).catch((err: Error) => {
    log.error(`fatal: ${err.stack ?? err.message}`);
    // Exiting hands control back to init, which powers the VM off with this status on the console.
    process.exit(1);
  });
}

// In the guest, node starts from a V8 startup snapshot of this bundle (pipeline/stages/rootfs.ts): every module was
// evaluated when the snapshot was built, and the guest only runs main. There process.argv has no script path.
if (startupSnapshot.isBuildingSnapshot()) {
  // node loads parseArgs's module on first use; loaded now, it is in the snapshot instead of being compiled from
  // source at every boot (about 120 ms of the agent's start under TCG, where --jitless has no code cache for it).
  parseArgs({ args: [], options: {} });
  startupSnapshot.setDeserializeMainFunction(() => run(process.argv.slice(1)));
} else run(process.argv.slice(2));
