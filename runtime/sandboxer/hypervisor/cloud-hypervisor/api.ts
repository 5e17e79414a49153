import { request } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

/** A request cloud-hypervisor refused: the HTTP status and its body (its error chain, as text). */
export class ClhApiError extends Error {
  constructor(
    readonly method: string,
    readonly endpoint: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(`cloud-hypervisor ${method} ${endpoint}: HTTP ${status}${body ? `: ${body.trim().slice(0, 500)}` : ""}`);
    this.name = "ClhApiError";
  }
}

/** Shapes from cloud-hypervisor's openapi spec (vmm/src/api/openapi/cloud-hypervisor.yaml) that the driver uses. */
export interface VmInfo {
  state: "Created" | "Running" | "Shutdown" | "Paused" | "BreakPoint";
  config: Record<string, unknown>;
  memory_actual_size?: number;
}
export interface DiskConfig {
  path: string;
  readonly?: boolean;
  direct?: boolean;
  id?: string;
  serial?: string;
}
export interface PciDeviceInfo {
  id: string;
  bdf: string;
}

/** cloud-hypervisor's REST API: HTTP/1.1 over the --api-socket unix socket, under /api/v1. */
export class ClhApi {
  constructor(readonly socketPath: string) {}

  async call<T = undefined>(method: "GET" | "PUT", endpoint: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path: `/api/v1/${endpoint}`,
          headers: {
            Host: "localhost",
            Accept: "application/json",
            ...(payload !== undefined
              ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) }
              : { "Content-Length": 0 }),
          },
          timeout: timeoutMs,
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () => {
            const status = res.statusCode ?? 0;
            if (status < 200 || status >= 300) return reject(new ClhApiError(method, endpoint, status, text));
            try {
              resolve((text ? JSON.parse(text) : undefined) as T);
            } catch {
              reject(new Error(`cloud-hypervisor ${method} ${endpoint}: answer is not JSON: ${text.slice(0, 200)}`));
            }
          });
        },
      );
      req.on("timeout", () =>
        req.destroy(new Error(`cloud-hypervisor ${method} ${endpoint}: no answer within ${timeoutMs} ms`)),
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** Waits until the API answers vmm.ping (the socket appears a little after the process starts). */
  async waitReady(timeoutMs: number, keepTrying: () => boolean): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.call("GET", "vmm.ping", undefined, 2000);
        return;
      } catch (err) {
        if (Date.now() >= deadline || !keepTrying()) {
          throw new Error(`cloud-hypervisor API ${this.socketPath}: ${(err as Error).message}`);
        }
        await sleep(25);
      }
    }
  }

  vmInfo(): Promise<VmInfo> {
    return this.call<VmInfo>("GET", "vm.info", undefined, 5000);
  }
  powerButton(): Promise<void> {
    return this.call("PUT", "vm.power-button");
  }
  shutdownVm(): Promise<void> {
    return this.call("PUT", "vm.shutdown");
  }
  shutdownVmm(): Promise<void> {
    return this.call("PUT", "vmm.shutdown");
  }
  addDisk(disk: DiskConfig): Promise<PciDeviceInfo> {
    return this.call<PciDeviceInfo>("PUT", "vm.add-disk", disk);
  }
  removeDevice(id: string): Promise<void> {
    return this.call("PUT", "vm.remove-device", { id });
  }
  /** vCPUs and RAM (bytes) the VM should have; cloud-hypervisor hot-plugs the difference through ACPI. */
  resize(req: { desired_vcpus?: number; desired_ram?: number }): Promise<void> {
    return this.call("PUT", "vm.resize", req);
  }
}
