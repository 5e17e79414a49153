// The guest's vsock ports (Kuasar's guest contract). Both serve only the host: see runtime/agent/peer-check.ts.

/** vmm-task serves ttrpc here: containerd's Task v2/v3, Kuasar's SandboxService and Streaming. */
export const AGENT_PORT = 1024;
/** With task.debug, vmm-task serves a root shell on a pty here (kuasar-ctl exec and shell). */
export const DEBUG_CONSOLE_PORT = 1025;
