/** `[sandbox] tracing_endpoint`: the OTLP/HTTP traces URL of a collector. */
export const DEFAULT_TRACING_ENDPOINT = "http://127.0.0.1:4318/v1/traces";

/** What is wrong with an endpoint value, for the config loader (which names the key); undefined when it is fine. */
export function tracingEndpointProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `expected an http:// or https:// URL such as ${DEFAULT_TRACING_ENDPOINT}`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `expected an http:// or https:// URL (OTLP over HTTP), not ${url.protocol}//`;
  }
  if (url.username || url.password) {
    return "the URL must not carry a user or password: the daemon writes the endpoint to its log";
  }
  return undefined;
}
