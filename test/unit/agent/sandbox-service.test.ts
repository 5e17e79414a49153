import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { EventQueue } from "../../../runtime/agent/event-queue.ts";
import { sandboxService } from "../../../runtime/agent/services/sandbox-service.ts";
import { SandboxService } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from "../../../runtime/ttrpc/index.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "sandbox-service-"));
});
after(() => rm(dir, { recursive: true, force: true }));

/** A client of the agent's SandboxService over a unix socket, as the host would call it. */
async function agent(debug: boolean): Promise<{ client: TtrpcClient; close(): Promise<void> }> {
  const server = new TtrpcServer().register(
    SandboxService,
    sandboxService({ events: new EventQueue(), debug, setupPod: async () => undefined }),
  );
  const sock = path.join(dir, `agent-${debug}.sock`);
  const l = net.createServer();
  server.serve(l);
  await new Promise<void>((resolve) => l.listen(sock, resolve));
  const conn = net.connect(sock);
  await new Promise((resolve, reject) => conn.once("connect", resolve).once("error", reject));
  const client = new TtrpcClient(conn);
  return {
    client,
    close: async () => {
      client.close();
      await server.close();
    },
  };
}

test("without task.debug ExecVMProcess answers PermissionDenied naming task.debug, and runs nothing", async () => {
  const marker = path.join(dir, "ran");
  const { client, close } = await agent(false);
  try {
    await assert.rejects(
      client.service(SandboxService).execVMProcess({ command: `touch ${marker}`, stdin: Buffer.alloc(0) }),
      (e: unknown) => {
        assert.ok(e instanceof TtrpcError, String(e));
        assert.equal(e.code, Code.PermissionDenied);
        assert.match(e.message, /ExecVMProcess is disabled: it runs only in a guest booted with task\.debug/);
        return true;
      },
    );
    // The rest of the service is unaffected.
    await client.service(SandboxService).check({ service: "" });
  } finally {
    await close();
  }
  assert.equal(existsSync(marker), false, "the command must not have run");
});

test("with task.debug ExecVMProcess runs the command with sh -c and returns its output", async () => {
  const { client, close } = await agent(true);
  try {
    const r = await client
      .service(SandboxService)
      .execVMProcess({ command: "cat; echo done", stdin: Buffer.from("in\n") });
    assert.equal(r.out, "in\ndone\n");
  } finally {
    await close();
  }
});
