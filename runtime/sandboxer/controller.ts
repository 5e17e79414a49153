import os from "node:os";
import { fromBinary, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { GrpcError, type MethodsOf, type UnaryHandlers } from "../grpc/service.ts";
import type { Controller } from "../protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { PodSandboxConfigSchema } from "../protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import type { SandboxManager } from "./sandbox/manager.ts";

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

/** containerd's sandbox Controller, mapped onto the SandboxManager. */
export function controllerHandlers(mgr: SandboxManager, version: string): UnaryHandlers<MethodsOf<typeof Controller>> {
  return {
    async create(req) {
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
      await mgr.create({
        id: req.sandboxId,
        netnsPath: req.netnsPath,
        podConfig,
        annotations: { ...req.annotations },
        labels: { ...(req.sandbox?.labels ?? {}) },
      });
      return { sandboxId: req.sandboxId };
    },
    async start(req) {
      const rec = await mgr.start(req.sandboxId);
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
      mgr.status(req.sandboxId);
      throw new GrpcError(
        grpc.status.UNIMPLEMENTED,
        "sandbox metrics come from the pod cgroup (CRI does not call Metrics)",
      );
    },
    async update(req) {
      mgr.status(req.sandboxId);
      return {};
    },
  };
}
