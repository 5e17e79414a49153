/** The parts of CRI's PodSandboxConfig (protobuf JSON) that ask to share a namespace with the host. */
interface NamespaceOptionsJson {
  linux?: { securityContext?: { namespaceOptions?: { network?: string; pid?: string; ipc?: string } } };
}

const HOST_NAMESPACES: Array<{ field: "network" | "pid" | "ipc"; k8s: string; why: string }> = [
  { field: "network", k8s: "hostNetwork", why: "the VM has its own network stack and NICs" },
  { field: "pid", k8s: "hostPID", why: "the pod's processes run in the VM's kernel, which cannot see the host's" },
  { field: "ipc", k8s: "hostIPC", why: "System V IPC and POSIX shared memory do not cross the VM boundary" },
];

/**
 * Why a pod cannot run in a VM as asked, or undefined: sharing the host's network, PID or IPC namespace is
 * impossible from inside a VM, and doing something else instead would be a silent lie.
 */
export function hostNamespaceRefusal(podConfig: unknown): string | undefined {
  const ns = (podConfig as NamespaceOptionsJson | undefined)?.linux?.securityContext?.namespaceOptions;
  for (const { field, k8s, why } of HOST_NAMESPACES) {
    if (ns?.[field] === "NODE") {
      return (
        `linux.security_context.namespace_options.${field} = NODE (${k8s}) cannot be honoured in a VM sandbox: ${why}; ` +
        "run this pod with a runc RuntimeClass"
      );
    }
  }
  return undefined;
}
