import { chmod, lstat, mkdir, rm } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import type { Registry } from "prom-client";
import type { Logger } from "../../log/log.ts";
import { describeListen, METRICS_LISTEN_KEY, type MetricsListen } from "./address.ts";

/** A scrape is one small GET: anything bigger is not Prometheus. */
const MAX_HEADER_BYTES = 8 * 1024;
const MAX_CONNECTIONS = 16;
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;

export interface MetricsServer {
  /** Where it listens, as configured (unix:///..., 127.0.0.1:PORT). */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Serves GET /metrics from the registry on a unix socket (mode 0600) or a loopback port; every other request gets
 * 404, a request with a body 413. Scrapes that arrive together share one collection, so a local client hammering the
 * port costs the daemon one /proc walk at a time.
 */
export async function serveMetrics(listen: MetricsListen, registry: Registry, log: Logger): Promise<MetricsServer> {
  let inflight: Promise<string> | undefined;
  const render = () => {
    inflight ??= registry.metrics().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };
  const server = http.createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
    },
    (req, res) => {
      const reply = (code: number, body: string, type = "text/plain; charset=utf-8") => {
        res.writeHead(code, { "content-type": type, "content-length": Buffer.byteLength(body) });
        res.end(body);
      };
      if (req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) !== 0) {
        res.setHeader("connection", "close");
        reply(413, "a metrics request has no body\n");
        return;
      }
      const pathname = (req.url ?? "").split("?")[0];
      if (req.method !== "GET" || pathname !== "/metrics") {
        reply(404, "only GET /metrics is served here\n");
        return;
      }
      render().then(
        (text) => reply(200, text, registry.contentType),
        (err: Error) => {
          log.warn(`metrics: collecting failed: ${err.message}`);
          reply(500, "collecting the metrics failed; see the daemon log\n");
        },
      );
    },
  );
  server.maxConnections = MAX_CONNECTIONS;
  const address = describeListen(listen);
  try {
    if (listen.kind === "unix") {
      await prepareSocketPath(listen.path);
      await listenOn(server, { path: listen.path });
      await chmod(listen.path, 0o600);
    } else {
      await listenOn(server, { host: listen.host, port: listen.port });
    }
  } catch (err) {
    server.close();
    throw new Error(`${METRICS_LISTEN_KEY} = ${JSON.stringify(address)}: cannot listen: ${(err as Error).message}`);
  }
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function listenOn(server: http.Server, options: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** Creates the socket's directory (0700) when missing; replaces a stale socket, never any other kind of file. */
async function prepareSocketPath(file: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const st = await lstat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  if (!st) return;
  if (!st.isSocket()) {
    throw new Error(`${file} exists and is not a socket; remove it or choose another path`);
  }
  await rm(file);
}
