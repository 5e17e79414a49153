import { readFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";

/** The two Kubernetes API calls the installer makes (ClusterRole: nodes get, patch). */
export interface NodeApi {
  labels(node: string): Promise<Record<string, string>>;
  /** JSON merge patch of one label; null removes it. */
  setLabel(node: string, key: string, value: string | null): Promise<void>;
}

const SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeConnection {
  /** https://host:port (http:// only in tests). */
  server: string;
  /** Read per request: projected service-account tokens rotate. */
  token: () => Promise<string>;
  ca?: Buffer;
}

/** The pod's own service account, as every in-cluster client finds it. */
export async function inClusterConnection(env: NodeJS.ProcessEnv, saDir = SA_DIR): Promise<KubeConnection> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new Error(
      "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set, so the node cannot be labelled; run the installer in a pod, or unset NODE_NAME to skip the label",
    );
  }
  const ca = await readFile(`${saDir}/ca.crt`).catch(() => {
    throw new Error(
      `${saDir}/ca.crt is missing; the DaemonSet's service account token must be mounted (automountServiceAccountToken)`,
    );
  });
  return {
    server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    token: async () => (await readFile(`${saDir}/token`, "utf8")).trim(),
    ca,
  };
}

export function nodeApi(conn: KubeConnection): NodeApi {
  const call = async (method: string, node: string, body?: unknown): Promise<Record<string, unknown>> => {
    const url = new URL(`/api/v1/nodes/${encodeURIComponent(node)}`, conn.server);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = {
      Authorization: `Bearer ${await conn.token()}`,
      Accept: "application/json",
    };
    if (payload !== undefined) headers["Content-Type"] = "application/merge-patch+json";
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const mod = url.protocol === "https:" ? https : http;
      const req = mod.request(url, { method, headers, ca: conn.ca, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error("no answer within 30 s")));
      req.on("error", reject);
      req.end(payload);
    }).catch((err: Error) => {
      throw new Error(`Kubernetes API ${method} ${url.pathname} on ${conn.server}: ${err.message}`);
    });
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // A proxy's HTML error page: the status line says enough.
    }
    if (status < 200 || status > 299) {
      const hint =
        status === 403 ? "; the ClusterRole kuasar-vmm-node-installer must allow get and patch on nodes" : "";
      throw new Error(
        `Kubernetes API ${method} ${url.pathname}: ${status} ${typeof json.message === "string" ? json.message : text.slice(0, 200)}${hint}`,
      );
    }
    return json;
  };
  return {
    async labels(node) {
      const obj = await call("GET", node);
      const meta = (obj.metadata ?? {}) as { labels?: Record<string, string> };
      return meta.labels ?? {};
    },
    async setLabel(node, key, value) {
      await call("PATCH", node, { metadata: { labels: { [key]: value } } });
    },
  };
}
