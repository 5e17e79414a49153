import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { addUnaryService, GrpcError, unaryClient } from "../../../runtime/grpc/service.ts";
import { Controller } from "../../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";

let dir: string;
let server: grpc.Server;
let target: string;
const seen: string[] = [];

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "grpc-test-"));
  target = `unix://${path.join(dir, "c.sock")}`;
  server = new grpc.Server();
  const notFound = async () => {
    throw new GrpcError(grpc.status.NOT_FOUND, "sandbox x not found");
  };
  addUnaryService(server, Controller, {
    create: async (req) => ({ sandboxId: req.sandboxId }),
    start: async (req, ctx) => {
      seen.push(String(ctx.metadata.get("containerd-namespace")[0]));
      return { sandboxId: req.sandboxId, pid: 42, version: 3, address: "ttrpc+unix:///x" };
    },
    platform: async () => ({ platform: { os: "linux", architecture: "amd64" } }),
    stop: notFound,
    wait: notFound,
    status: async () => {
      throw new Error("boom");
    },
    shutdown: notFound,
    metrics: notFound,
    update: notFound,
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
});

after(async () => {
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

test("unary calls round-trip typed messages and metadata", async () => {
  const { client, close } = unaryClient(Controller, target);
  try {
    assert.equal((await client.create({ sandboxId: "a" })).sandboxId, "a");
    const started = await client.start({ sandboxId: "b" }, { metadata: { "containerd-namespace": "k8s.io" } });
    assert.deepEqual([started.pid, started.version, started.address], [42, 3, "ttrpc+unix:///x"]);
    assert.deepEqual(seen, ["k8s.io"]);
    assert.equal((await client.platform({ sandboxId: "b" })).platform?.os, "linux");
  } finally {
    close();
  }
});

test("handler errors map to status codes: GrpcError keeps its code, others are INTERNAL", async () => {
  const { client, close } = unaryClient(Controller, target);
  try {
    await assert.rejects(client.stop({ sandboxId: "x" }), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.NOT_FOUND);
      assert.match(e.details, /sandbox x not found/);
      return true;
    });
    await assert.rejects(client.status({ sandboxId: "x" }), (e: grpc.ServiceError) => e.code === grpc.status.INTERNAL);
  } finally {
    close();
  }
});
