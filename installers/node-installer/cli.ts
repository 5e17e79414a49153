import { logger } from "../../runtime/log/log.ts";
import { execRunner } from "./host.ts";
import { inClusterConnection, nodeApi } from "./kube.ts";
import { main } from "./main.ts";

// The image's entrypoint (bundled to /opt/kuasar-vmm/installer.cjs). Its lines are the daemon's format, so one
// log pipeline (and `kubectl logs | grep`) reads both.
const log = logger("node_installer");
main(process.argv.slice(2), process.env, {
  run: execRunner,
  nodeApi: async () => nodeApi(await inClusterConnection(process.env)),
  log: (line) => log.info(line),
  error: (line) => log.error(line),
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
