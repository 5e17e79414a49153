import { execRunner } from "./host.ts";
import { inClusterConnection, nodeApi } from "./kube.ts";
import { main } from "./main.ts";

// The image's entrypoint (bundled to /opt/kuasar-vmm/installer.cjs).
main(process.argv.slice(2), process.env, {
  run: execRunner,
  nodeApi: async () => nodeApi(await inClusterConnection(process.env)),
  log: (line) => console.log(line),
  error: (line) => console.error(line),
  waitForSignal: () =>
    new Promise((resolve) => {
      // Signal handlers alone do not keep the event loop alive.
      const keepAlive = setInterval(() => {}, 1 << 30);
      const done = () => {
        clearInterval(keepAlive);
        resolve();
      };
      process.once("SIGTERM", done);
      process.once("SIGINT", done);
    }),
}).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    console.error(`kuasar-vmm-node-installer: ${err.stack ?? err.message}`);
    process.exitCode = 1;
  },
);
