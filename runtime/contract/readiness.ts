import { AGENT_PORT } from "./ports.ts";

// vmm-task tells the serial console when it serves ttrpc: over hybrid vsock the host dials only after that line, as
// the VMM refuses a CONNECT to a port nobody listens on yet.

const SERVING = "vmm-task serving ttrpc on ";
/** What the agent says once it serves on AGENT_PORT, and what the host looks for on the console. */
export const AGENT_READY = `${SERVING}vsock port ${AGENT_PORT}`;

/**
 * The agent's readiness line, on Kuasar's log line whatever the log level: `listen` is the unix socket it serves
 * on outside a VM (tests), undefined in a guest.
 */
export function agentReadyLine(listen?: string, now = new Date()): string {
  return `[${now.toISOString()} INFO  vmm_task] ${listen === undefined ? AGENT_READY : `${SERVING}${listen}`}\n`;
}

/** Whether console output shows the agent serving on AGENT_PORT. */
export function showsAgentReady(text: string): boolean {
  return text.includes(AGENT_READY);
}
