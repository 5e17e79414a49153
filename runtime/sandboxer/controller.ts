import os from "node:os";
import path from "node:path";
import { fromBinary, toJson } from "@bufbuild/protobuf";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { metricsAny } from "../cgroups/metrics.ts";
import { validateId } from "../contract/ids.ts";
import { type CallContext, GrpcError, type MethodsOf, type UnaryHandlers } from "../grpc/service.ts";
import { Controller } from "../protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { tracing } from "../trace/host.ts";
import { firstValue, TRACEPARENT } from "../trace/traceparent.ts";
import { hostNamespaceRefusal } from "./pod-checks.ts";
import type { SandboxManager } from "./sandbox/manager.ts";
import { type PodResources, parentPath } from "./sandbox/pod-cgroup.ts";
import type { PodConfigJson } from "./share-files.ts";

/** The sandbox API version containerd 2.1 needs to use our task address instead of exec'ing a shim. */
const SANDBOX_API_VERSION = 3;
/** CRI stops pods with timeout 0; a VM still gets this long to power off cleanly before it is killed. */
const DEFAULT_STOP_MS = 3000;

const ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  s390x: "s390x",
  ppc64: "ppc64le",
  riscv64: "riscv64",
};

type ControllerHandlers = UnaryHandlers<MethodsOf<typeof Controller>>;
/** Every Controller request names its sandbox. */
type ControllerHandler = (req: { sandboxId: string }, ctx: CallContext) => Promise<unknown>;

/** containerd's sandbox Controller, mapped onto the SandboxManager; while tracing is on each call is a span. */
export function controllerHandlers(mgr: SandboxManager, version: string): ControllerHandlers {
  return traced(handlers(mgr, version));
}

/**
 * Each call in a server span "containerd.services.sandbox.v1.Controller/<Method>" with the sandbox id, child of
 * containerd's span when its metadata carries a traceparent (containerd's own tracing is on). Start's phases and
 * the calls into the guest become its children.
 */
function traced(handlers: ControllerHandlers): ControllerHandlers {
  const out: Record<string, unknown> = { ...handlers };
  for (const m of Controller.methods) {
    const handler = (handlers as unknown as Record<string, ControllerHandler>)[m.localName]!;
    out[m.localName] = (req: { sandboxId: string }, ctx: CallContext) =>
      tracing.on
        ? tracing.serve(
            `${Controller.typeName}/${m.name}`,
            firstValue(ctx.metadata.get(TRACEPARENT)),
            { "rpc.system": "grpc", "sandbox.id": req.sandboxId },
            () => handler(req, ctx),
          )
        : handler(req, ctx);
  }
  return out as ControllerHandlers;
}

function handlers(mgr: SandboxManager, version: string): ControllerHandlers {
  return {
    async create(req) {
      // The id first: every later message names it, and a bad one must not be echoed in full.
      const bad = validateId("sandbox", req.sandboxId);
      if (bad) throw new GrpcError(grpc.status.INVALID_ARGUMENT, bad);
      if (req.netnsPath !== "" && !path.isAbsolute(req.netnsPath)) {
        throw new GrpcError(
          grpc.status.INVALID_ARGUMENT,
          `sandbox ${req.sandboxId}: netns_path ${JSON.stringify(req.netnsPath)} must be an absolute path (or empty)`,
        );
      }
      let podConfig: unknown;
      if (req.options?.value.length) {
        const url = req.options.typeUrl;
        if (!url.endsWith("runtime.v1.PodSandboxConfig")) {
          throw new GrpcError(
            grpc.status.INVALID_ARGUMENT,
            `sandbox ${req.sandboxId}: options type '${url}' is not runtime.v1.PodSandboxConfig`,
          );
        }
        try {
          podConfig = toJson(PodSandboxConfigSchema, fromBinary(PodSandboxConfigSchema, req.options.value));
        } catch (err) {
          throw new GrpcError(
            grpc.status.INVALID_ARGUMENT,
            `sandbox ${req.sandboxId}: options are not a valid PodSandboxConfig: ${(err as Error).message}`,
          );
        }
      }
      const refused = hostNamespaceRefusal(podConfig);
      if (refused) throw new GrpcError(grpc.status.INVALID_ARGUMENT, `sandbox ${req.sandboxId}: ${refused}`);
      const cgroupParent = (podConfig as PodConfigJson | undefined)?.linux?.cgroupParent;
      if (cgroupParent) {
        try {
          parentPath(cgroupParent);
        } catch (err) {
          throw new GrpcError(grpc.status.INVALID_ARGUMENT, `sandbox ${req.sandboxId}: ${(err as Error).message}`);
        }
      }
      await mgr.create({
        id: req.sandboxId,
        netnsPath: req.netnsPath,
        podConfig,
        annotations: { ...req.annotations },
        labels: { ...(req.sandbox?.labels ?? {}) },
      });
      return { sandboxId: req.sandboxId };
    },
    async start(req, ctx) {
      const rec = await mgr.start(req.sandboxId, ctx.signal);
      return {
        sandboxId: rec.id,
        pid: rec.pid ?? 0,
        createdAt: timestampFromDate(new Date(rec.createdAt)),
        labels: rec.labels,
        address: rec.taskAddress ?? "",
        version: SANDBOX_API_VERSION,
      };
    },
    async platform(req) {
      mgr.status(req.sandboxId);
      return { platform: { os: "linux", architecture: ARCH[os.arch()] ?? os.arch() } };
    },
    async stop(req) {
      await mgr.stop(req.sandboxId, req.timeoutSecs ? req.timeoutSecs * 1000 : DEFAULT_STOP_MS);
      return {};
    },
    async wait(req, ctx) {
      const exit = await Promise.race([
        mgr.wait(req.sandboxId),
        new Promise<never>((_, reject) =>
          ctx.signal.addEventListener("abort", () => reject(new GrpcError(grpc.status.CANCELLED, "wait cancelled"))),
        ),
      ]);
      return { exitStatus: exit.exitStatus, exitedAt: timestampFromDate(exit.exitedAt) };
    },
    async status(req) {
      const rec = mgr.status(req.sandboxId);
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.version = version;
        info.dir = mgr.dirOf(rec.id);
        if (rec.netnsPath) info.netns = rec.netnsPath;
      }
      return {
        sandboxId: rec.id,
        pid: rec.pid ?? 0,
        state: rec.state === "running" ? "SANDBOX_READY" : "SANDBOX_NOTREADY",
        info,
        createdAt: timestampFromDate(new Date(rec.createdAt)),
        exitedAt: rec.exitedAt ? timestampFromDate(new Date(rec.exitedAt)) : undefined,
        address: rec.taskAddress ?? "",
        version: SANDBOX_API_VERSION,
      };
    },
    async shutdown(req) {
      await mgr.shutdown(req.sandboxId);
      return {};
    },
    async metrics(req) {
      const stats = await mgr.stats(req.sandboxId);
      if (!stats) {
        throw new GrpcError(
          grpc.status.FAILED_PRECONDITION,
          `sandbox ${req.sandboxId} has no pod cgroup to measure: its PodSandboxConfig has no linux.cgroup_parent`,
        );
      }
      if (stats.version !== 2) {
        throw new GrpcError(
          grpc.status.FAILED_PRECONDITION,
          `sandbox ${req.sandboxId}: this host uses cgroup v1; Metrics reports cgroup v2 numbers (kubelet reads v1 pod stats from the pod cgroup itself)`,
        );
      }
      return { metrics: { timestamp: timestampNow(), id: req.sandboxId, data: metricsAny(stats) } };
    },
    async update(req) {
      mgr.status(req.sandboxId);
      const resources = podResourcesOf(req.sandboxId, req.sandbox, req.fields);
      if (resources) await mgr.update(req.sandboxId, resources);
      return {};
    },
  };
}

/**
 * Pod resources in an Update: linux.resources of the sandbox's OCI spec (fields "spec") or a LinuxResources
 * JSON in extensions["resources"] (fields "extensions"). Other fields are accepted and ignored.
 */
function podResourcesOf(
  id: string,
  sandbox: { spec?: { value: Uint8Array }; extensions: Record<string, { value: Uint8Array }> } | undefined,
  fields: string[],
): PodResources | undefined {
  const parse = (what: string, value: Uint8Array): Record<string, unknown> => {
    try {
      const v = JSON.parse(Buffer.from(value).toString("utf8")) as unknown;
      if (v && typeof v === "object") return v as Record<string, unknown>;
    } catch {
      // reported below
    }
    throw new GrpcError(grpc.status.INVALID_ARGUMENT, `sandbox ${id}: ${what} is not a JSON object`);
  };
  let resources: Record<string, unknown> | undefined;
  if (fields.includes("spec") && sandbox?.spec?.value.length) {
    const linux = parse("sandbox.spec", sandbox.spec.value).linux as Record<string, unknown> | undefined;
    resources = linux?.resources as Record<string, unknown> | undefined;
  }
  const ext = sandbox?.extensions.resources;
  if (fields.includes("extensions") && ext?.value.length) resources = parse('extensions["resources"]', ext.value);
  if (!resources) return undefined;
  const num = (v: unknown, field: string): number | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new GrpcError(grpc.status.INVALID_ARGUMENT, `sandbox ${id}: resources.${field} must be a number`);
    }
    return v;
  };
  const cpu = (resources.cpu ?? {}) as Record<string, unknown>;
  const memory = (resources.memory ?? {}) as Record<string, unknown>;
  const out: PodResources = {};
  const shares = num(cpu.shares, "cpu.shares");
  const quota = num(cpu.quota, "cpu.quota");
  const period = num(cpu.period, "cpu.period");
  const limit = num(memory.limit, "memory.limit");
  if (shares !== undefined || quota !== undefined || period !== undefined) {
    out.cpu = {
      ...(shares !== undefined ? { shares } : {}),
      ...(quota !== undefined ? { quota } : {}),
      ...(period !== undefined ? { period } : {}),
    };
  }
  if (limit !== undefined) out.memory = { limit };
  return out;
}
