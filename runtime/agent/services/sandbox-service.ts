import { logger } from "../../log/log.ts";
import { SandboxService } from "../../protos/gen/kuasar/sandbox_pb.ts";
import { traceServer } from "../../trace/ttrpc-server.ts";
import { Code, type ServiceHandlers, TtrpcError } from "../../ttrpc/index.ts";
import { syncClock } from "../clock.ts";
import type { EventQueue } from "../event-queue.ts";
import { onlineUntil } from "../hotplug.ts";
import { configureInterfaces, configureNeighbours, configureRoutes } from "../network.ts";
import { runProcess } from "../run-process.ts";
import { uptimeMs } from "../uptime.ts";
import { guestTracing } from "./tracing.ts";

/** The parts of CRI's PodSandboxConfig (protobuf JSON) the guest acts on. */
export interface PodConfig {
  hostname?: string;
  linux?: { sysctls?: Record<string, string> };
}

export interface SandboxServiceDeps {
  events: EventQueue;
  /** task.debug: only then is ExecVMProcess (a root shell command) served. */
  debug: boolean;
  /** Hostname, sysctls and the pod's persistent ipc/uts namespaces. */
  setupPod(config: PodConfig): Promise<void>;
}

/**
 * Kuasar's grpc.SandboxService: readiness, pod setup, networking, clock, events, the spans of traced requests
 * (DrainSpans), and (task.debug) a VM-level exec. A traced request gets a span.
 */
export function sandboxService(deps: SandboxServiceDeps): ServiceHandlers<typeof SandboxService> {
  return traceServer(SandboxService, sandboxHandlers(deps), guestTracing);
}

const log = logger("vmm_task::sandbox");

function sandboxHandlers(deps: SandboxServiceDeps): ServiceHandlers<typeof SandboxService> {
  const fail = (what: string) => (err: unknown) => {
    throw new TtrpcError(Code.Internal, `${what}: ${(err as Error).message}`);
  };
  return {
    check: async () => ({}),
    setupSandbox: async (req) => {
      // Each step's time, at debug: this call is on every pod's Start path.
      const took: string[] = [];
      let at = uptimeMs();
      const step = async (what: string, work: () => unknown) => {
        try {
          await work();
        } catch (err) {
          fail(what)(err);
        }
        const now = uptimeMs();
        took.push(`${what.split(" ").pop()} ${Math.round(now - at)}`);
        at = now;
      };
      if (req.config?.value.length) {
        // Kuasar sends the CRI PodSandboxConfig as JSON in an Any with type_url "PodSandboxConfig".
        let config: PodConfig;
        try {
          config = JSON.parse(Buffer.from(req.config.value).toString("utf8")) as PodConfig;
        } catch (err) {
          throw new TtrpcError(Code.InvalidArgument, `SetupSandbox config is not JSON: ${(err as Error).message}`);
        }
        await step("set up the pod", () => deps.setupPod(config));
      }
      // Netlink calls are synchronous: one request and its ack each, nothing worth the threadpool.
      await step("configure interfaces", () => configureInterfaces(req.interfaces));
      await step("configure routes", () => configureRoutes(req.routes));
      await step("configure neighbours", () => configureNeighbours(req.neighbors));
      log.debug(`SetupSandbox took (ms): ${took.join(", ")}`);
      return {};
    },
    updateInterfaces: async (req) => {
      try {
        configureInterfaces(req.interfaces);
      } catch (err) {
        fail("configure interfaces")(err);
      }
      return {};
    },
    updateRoutes: async (req) => {
      try {
        configureRoutes(req.routes);
      } catch (err) {
        fail("configure routes")(err);
      }
      return {};
    },
    syncClock: async (req) => syncClock(req).catch(fail("sync clock")),
    execVMProcess: async (req) => {
      // The host never calls it; it is a root shell for whoever reaches the port, so it is a debugging aid only.
      if (!deps.debug) {
        throw new TtrpcError(
          Code.PermissionDenied,
          "ExecVMProcess is disabled: it runs only in a guest booted with task.debug (set debug = true under [hypervisor.task] and recreate the pod)",
        );
      }
      const r = await runProcess("sh", ["-c", req.command], { input: req.stdin });
      return { out: r.spawnError ? r.spawnError.message : r.all };
    },
    getEvents: async (_req, ctx) => deps.events.next(ctx.signal),
    onlineCpuMem: async (req) => {
      const got = await onlineUntil({ cpus: req.cpus, memoryBytes: Number(req.memoryBytes) }, req.timeoutMs).catch(
        fail("online hot-plugged vCPUs and memory"),
      );
      return { onlineCpus: got.cpus, onlineMemoryBytes: BigInt(got.memoryBytes) };
    },
    // The host drains while tracing is on; an agent that never saw a traced request answers empty.
    drainSpans: async (req) => guestTracing.drain(req.maxSpans),
  };
}
