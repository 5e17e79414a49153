import type { CommonConfig } from "../config/common-tables.ts";
import { QmpClient, QmpError } from "./qmp.ts";
import { VmmDriver } from "./vm.ts";
import type { VmStatus } from "./vm-api.ts";

const DEVICE_DELETED_MS = 30_000;

/** QEMU and StratoVirt both speak QMP: control connection, status, quit and device removal live here. */
export abstract class QmpDriver<C extends CommonConfig> extends VmmDriver<C> {
  protected qmp?: QmpClient;

  protected async connectControl(timeoutMs: number, keepTrying: () => boolean): Promise<void> {
    const qmp = await QmpClient.connect(this.state.controlSocket, timeoutMs, keepTrying);
    this.qmp = qmp;
    qmp.on("event", (e) => {
      if (e.event === "SHUTDOWN") this.shutdownSeen = true;
      this.log.debug(`QMP event ${e.event} ${JSON.stringify(e.data ?? {})}`);
    });
    qmp.on("close", () => this.controlLost.abort());
  }

  protected closeControl(): void {
    this.qmp?.close();
  }

  protected client(): QmpClient {
    if (!this.qmp || this.qmp.closed) {
      throw new Error(`sandbox ${this.id}: no QMP connection to ${this.state.controlSocket} (the VM is not running)`);
    }
    return this.qmp;
  }

  protected async powerButton(): Promise<void> {
    await this.client().execute("system_powerdown");
  }

  protected async quit(): Promise<void> {
    await this.client()
      .execute("quit")
      .catch((err: Error) => {
        // QEMU may close the socket before its answer arrives: that is the quit working.
        if (err instanceof QmpError) throw err;
      });
  }

  async status(): Promise<VmStatus> {
    if (!this.qmp || this.qmp.closed) {
      const gone = this.state.vmm === undefined || (await this.settled());
      return gone
        ? { state: "exited", detail: "the VMM has exited" }
        : { state: "unresponsive", detail: "no QMP connection" };
    }
    try {
      const r = await this.qmp.execute<{ status: string; running: boolean }>("query-status", undefined, 5000);
      const state: VmStatus["state"] =
        r.status === "running" ? "running" : r.status === "shutdown" ? "shutdown" : r.running ? "running" : "paused";
      return { state, detail: r.status };
    } catch (err) {
      return { state: "unresponsive", detail: (err as Error).message };
    }
  }

  private async settled(): Promise<boolean> {
    const t = new Promise<false>((r) => setTimeout(() => r(false), 0));
    return Promise.race([this.wait().then(() => true), t]);
  }

  async removeDevice(id: string): Promise<void> {
    const dev = this.state.devices[id];
    if (!dev) throw new Error(`sandbox ${this.id}: no hot-plugged device ${id}`);
    const qmp = this.client();
    // device_del only asks the guest; the device is gone when DEVICE_DELETED arrives.
    const deleted = qmp.waitEvent("DEVICE_DELETED", (e) => e.data?.device === id, DEVICE_DELETED_MS);
    deleted.catch(() => {});
    await qmp.execute("device_del", { id });
    await deleted;
    if (dev.node) await qmp.execute("blockdev-del", { "node-name": dev.node });
    delete this.state.devices[id];
  }
}
