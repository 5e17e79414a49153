import http from "node:http";
import type { AddressInfo } from "node:net";

/** A span as an OTLP/HTTP JSON export carries it, with its resource's attributes flattened. */
export interface ReceivedSpan {
  service: string;
  resource: Record<string, string>;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, string>;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
}

interface KeyValue {
  key: string;
  value: { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
}

const flat = (kvs: KeyValue[] = []) =>
  Object.fromEntries(
    kvs.map((kv) => [
      kv.key,
      String(kv.value.stringValue ?? kv.value.intValue ?? kv.value.boolValue ?? kv.value.doubleValue),
    ]),
  );

/**
 * A collector for tests: takes OTLP/HTTP JSON exports (ExportTraceServiceRequest, as
 * @opentelemetry/exporter-trace-otlp-http sends them) POSTed to /v1/traces and keeps their spans.
 */
export async function otlpReceiver(): Promise<{ url: string; spans: ReceivedSpan[]; close(): Promise<void> }> {
  const spans: ReceivedSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces" || !/json/.test(req.headers["content-type"] ?? "")) {
        res.writeHead(400).end();
        return;
      }
      const doc = JSON.parse(body) as {
        resourceSpans: Array<{
          resource: { attributes: KeyValue[] };
          scopeSpans: Array<{
            spans: Array<Omit<ReceivedSpan, "service" | "resource" | "attributes"> & { attributes: KeyValue[] }>;
          }>;
        }>;
      };
      for (const rs of doc.resourceSpans) {
        const resource = flat(rs.resource.attributes);
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            spans.push({
              ...s,
              parentSpanId: s.parentSpanId ?? "",
              service: resource["service.name"] ?? "",
              resource,
              attributes: flat(s.attributes),
            });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
