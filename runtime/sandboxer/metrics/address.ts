import net from "node:net";
import path from "node:path";

/** Where the metrics endpoint listens: a unix socket, or a loopback TCP port. */
export type MetricsListen = { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };

export const METRICS_LISTEN_KEY = "sandbox.metrics_listen";
const FORMS = 'expected "" (off), unix:///absolute/path.sock, 127.0.0.1:PORT, [::1]:PORT or localhost:PORT';
/** sun_path holds 108 bytes with its terminating NUL. */
const MAX_SOCKET_PATH = 107;

const loopback = new net.BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");

/**
 * Parses `[sandbox] metrics_listen`: undefined for "" (off). Throws what is wrong with any other value; a
 * non-loopback address is refused because the metrics name every pod on the node.
 */
export function parseMetricsListen(value: string): MetricsListen | undefined {
  if (value === "") return undefined;
  if (value.startsWith("unix://")) return { kind: "unix", path: socketPath(value.slice("unix://".length)) };
  const m = /^\[([^\]]*)\]:(\d+)$/.exec(value) ?? /^([^:[\]]*):(\d+)$/.exec(value);
  if (!m) {
    const hint = net.isIPv6(value.replace(/:\d+$/, "")) ? " (write an IPv6 address in brackets: [::1]:PORT)" : "";
    throw new Error(`${FORMS}${hint}`);
  }
  const [, rawHost = "", rawPort = ""] = m;
  const port = Number(rawPort);
  if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
    throw new Error(`port ${rawPort} is out of range: expected 1..65535 (a fixed port, so Prometheus can find it)`);
  }
  const host = rawHost === "localhost" ? "127.0.0.1" : rawHost;
  const family = net.isIPv4(host) ? "ipv4" : net.isIPv6(host) ? "ipv6" : undefined;
  if (!family || !loopback.check(host, family)) {
    throw new Error(
      `${rawHost || "every address"} is not a loopback address: the metrics name every pod on this node, so the ` +
        "daemon serves them only on 127.0.0.1, [::1] or a unix socket; put a proxy with access control in front " +
        "to expose them",
    );
  }
  return { kind: "tcp", host, port };
}

function socketPath(p: string): string {
  if (!p.startsWith("/")) throw new Error(`unix:// takes an absolute path (unix:///run/kuasar-vmm/metrics.sock)`);
  if (p.includes("\0") || p.endsWith("/") || path.posix.normalize(p) !== p) {
    throw new Error(`${JSON.stringify(p)} is not a plain absolute path (no "..", "//", "." or trailing "/")`);
  }
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw new Error(`the socket path is longer than ${MAX_SOCKET_PATH} bytes, the most a unix socket address holds`);
  }
  return p;
}

/** For the config schema's check: what is wrong with the value, or undefined. */
export function metricsListenProblem(value: string): string | undefined {
  try {
    parseMetricsListen(value);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** How a log line or error names the address. */
export function describeListen(l: MetricsListen): string {
  return l.kind === "unix" ? `unix://${l.path}` : `${l.host.includes(":") ? `[${l.host}]` : l.host}:${l.port}`;
}
