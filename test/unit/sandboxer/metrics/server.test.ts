import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { lstat, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { Gauge, Registry } from "prom-client";
import { logger } from "../../../../runtime/log/log.ts";
import { serveMetrics } from "../../../../runtime/sandboxer/metrics/server.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "metrics-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A registry with one gauge whose collection takes a while and is counted. */
function slowRegistry(): { registry: Registry; collections: () => number } {
  const registry = new Registry();
  let n = 0;
  new Gauge({
    name: "test_collections",
    help: "how often the registry was collected",
    registers: [registry],
    async collect() {
      n++;
      await new Promise((r) => setTimeout(r, 50));
      this.set(n);
    },
  });
  return { registry, collections: () => n };
}

type Target = { socketPath: string } | { host: string; port: number };

function request(
  target: Target,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { ...target, method: opts.method ?? "GET", path: opts.path ?? "/metrics", headers: opts.headers ?? {} },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"], body }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

test("a unix socket: 0600 in a directory made 0700, GET /metrics answers, anything else 404", async () => {
  const sock = path.join(dir, "made/metrics.sock");
  const { registry } = slowRegistry();
  const server = await serveMetrics({ kind: "unix", path: sock }, registry, logger("test"));
  try {
    assert.equal(server.address, `unix://${sock}`);
    assert.equal((await stat(path.dirname(sock))).mode & 0o777, 0o700);
    assert.equal((await lstat(sock)).mode & 0o777, 0o600);
    const ok = await request({ socketPath: sock });
    assert.equal(ok.status, 200);
    assert.match(ok.type ?? "", /^text\/plain; version=0\.0\.4/);
    assert.match(ok.body, /^test_collections 1$/m);
    assert.equal((await request({ socketPath: sock }, { path: "/metrics?x=1" })).status, 200);
    for (const [method, p] of [
      ["GET", "/"],
      ["GET", "/metrics/"],
      ["GET", "/debug/pprof"],
      ["DELETE", "/metrics"],
      ["HEAD", "/metrics"],
    ] as const) {
      assert.equal((await request({ socketPath: sock }, { method, path: p })).status, 404, `${method} ${p}`);
    }
  } finally {
    await server.close();
  }
  await assert.rejects(lstat(sock), { code: "ENOENT" }, "the socket goes with the server");
});

test("a stale socket is replaced; any other file at the path is left alone and refused", async () => {
  const sock = path.join(dir, "stale.sock");
  // A daemon killed with SIGKILL leaves its socket file behind.
  const old = spawn(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(sock)})`]);
  while (!(await lstat(sock).catch(() => undefined))) await new Promise((r) => setTimeout(r, 20));
  old.kill("SIGKILL");
  await new Promise((r) => old.once("exit", r));
  assert.ok((await lstat(sock)).isSocket());
  const server = await serveMetrics({ kind: "unix", path: sock }, slowRegistry().registry, logger("test"));
  assert.equal((await request({ socketPath: sock })).status, 200);
  await server.close();

  const file = path.join(dir, "precious");
  await writeFile(file, "data");
  await assert.rejects(
    serveMetrics({ kind: "unix", path: file }, slowRegistry().registry, logger("test")),
    /sandbox\.metrics_listen = "unix:\/\/.*precious": cannot listen: .*precious exists and is not a socket/,
  );
  assert.equal((await stat(file)).size, 4);
  await mkdir(path.join(dir, "a-dir"));
  await assert.rejects(
    serveMetrics({ kind: "unix", path: path.join(dir, "a-dir") }, slowRegistry().registry, logger("test")),
    /exists and is not a socket/,
  );
});

async function takePort(): Promise<net.Server> {
  const taken = net.createServer().listen(0, "127.0.0.1");
  await new Promise((r) => taken.once("listening", r));
  return taken;
}

test("a loopback port serves; a port already taken is an error naming the key", async () => {
  const taken = await takePort();
  const port = (taken.address() as net.AddressInfo).port;
  try {
    await assert.rejects(
      serveMetrics({ kind: "tcp", host: "127.0.0.1", port }, slowRegistry().registry, logger("test")),
      new RegExp(`sandbox\\.metrics_listen = "127\\.0\\.0\\.1:${port}": cannot listen: .*EADDRINUSE`),
    );
  } finally {
    await new Promise((r) => taken.close(r));
  }
  const server = await serveMetrics({ kind: "tcp", host: "127.0.0.1", port }, slowRegistry().registry, logger("test"));
  try {
    assert.equal(server.address, `127.0.0.1:${port}`);
    assert.equal((await request({ host: "127.0.0.1", port })).status, 200);
  } finally {
    await server.close();
  }
});

test("requests stay small: a body is refused (413), oversized headers too (431)", async () => {
  const sock = path.join(dir, "bounded.sock");
  const server = await serveMetrics({ kind: "unix", path: sock }, slowRegistry().registry, logger("test"));
  try {
    const withBody = await request({ socketPath: sock }, { method: "POST", body: "x".repeat(1000) });
    assert.equal(withBody.status, 413);
    const getWithBody = await request({ socketPath: sock }, { headers: { "content-length": "1" }, body: "x" });
    assert.equal(getWithBody.status, 413);
    const chunked = await request({ socketPath: sock }, { headers: { "transfer-encoding": "chunked" }, body: "x" });
    assert.equal(chunked.status, 413);
    const big = await request({ socketPath: sock }, { headers: { "x-filler": "y".repeat(16 * 1024) } });
    assert.equal(big.status, 431);
  } finally {
    await server.close();
  }
});

test("scrapes that arrive together share one collection", async () => {
  const sock = path.join(dir, "coalesce.sock");
  const { registry, collections } = slowRegistry();
  const server = await serveMetrics({ kind: "unix", path: sock }, registry, logger("test"));
  try {
    const answers = await Promise.all(Array.from({ length: 10 }, () => request({ socketPath: sock })));
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(10).fill(200),
    );
    assert.equal(collections(), 1, "ten concurrent scrapes, one collection");
    await request({ socketPath: sock });
    assert.equal(collections(), 2, "a later scrape collects afresh");
  } finally {
    await server.close();
  }
});
