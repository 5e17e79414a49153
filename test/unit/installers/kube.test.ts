import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { inClusterConnection, nodeApi } from "../../../installers/node-installer/kube.ts";

interface Seen {
  method: string;
  url: string;
  auth: string | undefined;
  type: string | undefined;
  body: string;
}

async function withServer(
  answer: (s: Seen) => [number, unknown],
  fn: (server: string, seen: Seen[]) => Promise<void>,
): Promise<void> {
  const seen: Seen[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s: Seen = {
        method: req.method!,
        url: req.url!,
        auth: req.headers.authorization,
        type: req.headers["content-type"],
        body: Buffer.concat(chunks).toString(),
      };
      seen.push(s);
      const [status, body] = answer(s);
      res.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  try {
    await fn(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen);
  } finally {
    srv.close();
  }
}

test("labels are read with GET and set or removed with a JSON merge patch, bearer token on each call", async () => {
  let n = 0;
  await withServer(
    (s) => (s.method === "GET" ? [200, { metadata: { name: "node-1", labels: { a: "b" } } }] : [200, {}]),
    async (server, seen) => {
      const api = nodeApi({ server, token: async () => `token-${++n}` });
      assert.deepEqual(await api.labels("node-1"), { a: "b" });
      await api.setLabel("node-1", "kuasar.io/kuasar-vmm", "true");
      await api.setLabel("node-1", "kuasar.io/kuasar-vmm", null);
      assert.deepEqual(seen, [
        { method: "GET", url: "/api/v1/nodes/node-1", auth: "Bearer token-1", type: undefined, body: "" },
        {
          method: "PATCH",
          url: "/api/v1/nodes/node-1",
          auth: "Bearer token-2",
          type: "application/merge-patch+json",
          body: '{"metadata":{"labels":{"kuasar.io/kuasar-vmm":"true"}}}',
        },
        {
          method: "PATCH",
          url: "/api/v1/nodes/node-1",
          auth: "Bearer token-3",
          type: "application/merge-patch+json",
          body: '{"metadata":{"labels":{"kuasar.io/kuasar-vmm":null}}}',
        },
      ]);
    },
  );
});

test("a refused call names the status, the API's message and the RBAC it needs", async () => {
  await withServer(
    () => [403, { kind: "Status", message: 'nodes "node-1" is forbidden: User cannot patch resource' }],
    async (server) => {
      const api = nodeApi({ server, token: async () => "t" });
      await assert.rejects(
        api.setLabel("node-1", "k", "v"),
        /PATCH \/api\/v1\/nodes\/node-1: 403 nodes "node-1" is forbidden.*ClusterRole kuasar-vmm-node-installer must allow get and patch on nodes/,
      );
    },
  );
});

test("the in-cluster connection comes from the service host variables and the mounted service account", async () => {
  await assert.rejects(inClusterConnection({}), /KUBERNETES_SERVICE_HOST\/KUBERNETES_SERVICE_PORT are not set/);
  const sa = await mkdtemp(path.join(os.tmpdir(), "sa-"));
  try {
    const env = { KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" };
    await assert.rejects(inClusterConnection(env, sa), /ca\.crt is missing/);
    await writeFile(path.join(sa, "ca.crt"), "CA");
    await writeFile(path.join(sa, "token"), "tok\n");
    const conn = await inClusterConnection(env, sa);
    assert.equal(conn.server, "https://[fd00::1]:443");
    assert.equal(await conn.token(), "tok");
    assert.equal(conn.ca?.toString(), "CA");
  } finally {
    await rm(sa, { recursive: true, force: true });
  }
});
