// AF_VSOCK for Node (which has none) through the addon in runtime/native/vsock: net-like sockets and servers.
export { localCid } from "./vsock-addon.ts";
export { VMADDR_CID_ANY, VMADDR_PORT_ANY, type VsockAddress } from "./vsock-address.ts";
export { connectVsock, type VsockConnectOptions } from "./vsock-connect.ts";
export { listenVsock, type VsockListenOptions, VsockServer, type VsockServerOptions } from "./vsock-server.ts";
export { VsockSocket, type VsockSocketOptions } from "./vsock-socket.ts";
