import { withAddress } from "../runtime/transport/errno-error.ts";
import { native } from "../runtime/transport/vsock-addon.ts";
import { VsockServer, type VsockServerOptions } from "../runtime/transport/vsock-server.ts";
import { VsockSocket, type VsockSocketOptions } from "../runtime/transport/vsock-socket.ts";

/** The addon's AF_UNIX calls: there for tests, so production code neither types nor exports them. */
interface UnixTestAddon {
  unixListen(path: string, backlog: number): number;
  unixConnect(path: string): number;
  socketpair(): [number, number];
}

function addon(): UnixTestAddon {
  return native() as ReturnType<typeof native> & UnixTestAddon;
}

/** The same native stream and server code over AF_UNIX, for tests on hosts where vsock has no reachable peer. */
export const vsockTestHooks = {
  socketPair(opts?: VsockSocketOptions): [VsockSocket, VsockSocket] {
    const [a, b] = addon().socketpair();
    return [new VsockSocket(a, "socketpair[0]", opts), new VsockSocket(b, "socketpair[1]", opts)];
  },
  listenUnix(socketPath: string, opts: VsockServerOptions = {}): VsockServer {
    return new VsockServer(addon().unixListen(socketPath, opts.backlog ?? 128), socketPath, opts);
  },
  connectUnix(socketPath: string, timeoutMs: number, opts?: VsockSocketOptions): Promise<VsockSocket> {
    let fd: number;
    try {
      fd = addon().unixConnect(socketPath);
    } catch (e) {
      return Promise.reject(withAddress(e, socketPath));
    }
    return VsockSocket.connecting(fd, socketPath, timeoutMs, opts);
  },
};
