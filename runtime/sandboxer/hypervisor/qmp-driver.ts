import type { CommonConfig } from "../config/common-tables.ts";
import { QmpClient, QmpError } from "./qmp.ts";
import { checkDiskId, VmmDriver } from "./vm.ts";
import type { DeviceRemoval, VmStatus } from "./vm-api.ts";

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

  /** The block nodes a device of this driver may hold, top first (also for one an earlier daemon plugged). */
  protected nodesOf(id: string): string[] {
    return [this.state.devices[id]?.node ?? `drive-${id}`];
  }

  /** The guest did not release a device in time: by default the removal fails, naming it. */
  protected async notReleased(id: string, timeoutMs: number): Promise<DeviceRemoval> {
    throw new Error(`sandbox ${this.id}: the guest did not release device ${id} within ${timeoutMs} ms`);
  }

  async removeDevice(id: string, opts: { timeoutMs?: number } = {}): Promise<DeviceRemoval> {
    checkDiskId(this.id, id);
    const timeoutMs = opts.timeoutMs ?? DEVICE_DELETED_MS;
    const qmp = this.client();
    // device_del only asks the guest; the device is gone when DEVICE_DELETED arrives.
    const deleted = qmp.waitEvent("DEVICE_DELETED", (e) => e.data?.device === id, timeoutMs);
    deleted.catch(() => {});
    const asked = await qmp.execute("device_del", { id }).then(
      () => true,
      (err: Error) => {
        // Gone already (an earlier removal finished, or it was never plugged): only its block nodes may be left.
        if (err instanceof QmpError && err.errorClass === "DeviceNotFound") return false;
        // Asked before (a removal that timed out): the guest may still let go.
        if (err instanceof QmpError && /in the process of unplug/.test(err.desc)) return true;
        throw err;
      },
    );
    if (
      asked &&
      !(await deleted.then(
        () => true,
        () => false,
      ))
    )
      return this.notReleased(id, timeoutMs);
    // Top first; a node that does not exist (never made, or gone) is skipped.
    for (const node of this.nodesOf(id)) {
      await qmp.execute("blockdev-del", { "node-name": node }).catch((err: Error) => {
        if (!(err instanceof QmpError && /Failed to find node/.test(err.desc))) throw err;
      });
    }
    delete this.state.devices[id];
    return "removed";
  }
}
