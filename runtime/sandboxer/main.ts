import { existsSync } from "node:fs";
import { chmod, mkdir, rm } from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import pkg from "../../package.json" with { type: "json" };
import { doctorMain } from "../doctor/cli.ts";
import { addUnaryService } from "../grpc/service.ts";
import { type Level, logger, parseLevel, setLogLevel } from "../log/log.ts";
import { Controller } from "../protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { tracing } from "../trace/host.ts";
import { loadConfig } from "./config/load.ts";
import { type Config, defaultConfig } from "./config/schema.ts";
import { controllerHandlers } from "./controller.ts";
import { EventPublisher } from "./events.ts";
import { parseFlags, USAGE } from "./flags.ts";
import { parseMetricsListen } from "./metrics/address.ts";
import { NO_METRICS } from "./metrics/observer.ts";
import { type MetricsServer, serveMetrics } from "./metrics/server.ts";
import { sdNotify, startWatchdog } from "./notify.ts";
import { VmLauncher } from "./sandbox/launcher.ts";
import { SandboxManager } from "./sandbox/manager.ts";

// The bundler inlines package.json, so a shipped binary reports the version it was built from.
const VERSION = pkg.version;
const log = logger("vmm_sandboxer");

async function readConfig(file: string, explicit: boolean): Promise<Config> {
  if (!explicit && !existsSync(file)) {
    log.warn(`${file} does not exist; using the built-in QEMU defaults (install-vmm writes one)`);
    return defaultConfig("qemu");
  }
  const loaded = await loadConfig(file);
  for (const w of loaded.warnings) log.warn(w);
  return loaded.config;
}

function levelOf(flag: string | undefined, config: Config): Level {
  if (flag) return parseLevel(flag, "--log-level");
  return config.sandbox.log_level ? parseLevel(config.sandbox.log_level, "sandbox.log_level") : "info";
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === "check") return doctorMain(argv.slice(1), "vmm-sandboxer check");
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags(argv);
  } catch (err) {
    process.stderr.write(`vmm-sandboxer: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`vmm-sandboxer ${VERSION} (kuasar-vmm, node ${process.version})\n`);
    return 0;
  }
  const config = await readConfig(flags.config, flags.configExplicit);
  setLogLevel(levelOf(flags.logLevel, config));
  await mkdir(flags.dir, { recursive: true, mode: 0o750 });
  // Off by default and then free: OpenTelemetry is loaded the first time tracing is turned on (docs/operating.md).
  tracing.configure({
    endpoint: config.sandbox.tracing_endpoint,
    guests: config.hypervisor.task.enable_tracing,
    version: VERSION,
    log: log.child("trace"),
  });
  if (config.sandbox.enable_tracing) await tracing.set(true);
  // Kuasar's switch; a listener also keeps Node from opening its inspector on SIGUSR1.
  process.on("SIGUSR1", () => void tracing.toggle());

  const events = new EventPublisher(`${config.sandbox.containerd_address}.ttrpc`, log.child("events"));
  // Checked by the config loader, which names the key in its error.
  const metricsAt = parseMetricsListen(config.sandbox.metrics_listen);
  // Loaded only when configured: with metrics off prom-client is never evaluated and the hooks are no-ops.
  const metrics = metricsAt ? new (await import("./metrics/registry.ts")).DaemonMetrics() : undefined;
  const launcher = new VmLauncher(config, events, log.child("vm"), metrics ?? NO_METRICS);
  const manager = new SandboxManager(flags.dir, launcher, log.child("sandbox"), metrics ?? NO_METRICS);
  metrics?.watch(manager);
  const recovered = await manager.recover();
  log.info(`recovery: ${recovered.recovered.length} sandboxes kept, ${recovered.cleaned.length} cleaned up`);

  const server = new grpc.Server({ "grpc.max_receive_message_length": 16 << 20 });
  addUnaryService(server, Controller, controllerHandlers(manager, VERSION), (method, err) =>
    log.debug(`${method}: ${(err as Error).message}`),
  );
  await rm(flags.listen, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${flags.listen}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(new Error(`cannot listen on ${flags.listen}: ${err.message}`)) : resolve(),
    ),
  );
  await chmod(flags.listen, 0o600);
  let metricsServer: MetricsServer | undefined;
  if (metricsAt && metrics) {
    metricsServer = await serveMetrics(metricsAt, metrics.registry, log.child("metrics"));
    log.info(`serving Prometheus metrics on ${metricsServer.address} (GET /metrics)`);
  }
  log.info(`vmm-sandboxer ${VERSION} serving the sandbox API on ${flags.listen} (state in ${flags.dir})`);
  // READY only now: the socket is bound and every sandbox was recovered or cleaned (Kuasar sends it too early).
  await sdNotify("READY=1");
  const stopWatchdog = startWatchdog();

  process.on("SIGHUP", () => {
    readConfig(flags.config, flags.configExplicit).then(
      (c) => {
        setLogLevel(levelOf(flags.logLevel, c));
        log.info(
          "SIGHUP: configuration re-read (log level applied; other changes apply to new sandboxes after a restart)",
        );
      },
      (err: Error) => log.error(`SIGHUP: ${err.message}; keeping the current configuration`),
    );
  });
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: no longer serving; running VMs are left running for the next start to recover`);
      resolve();
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  stopWatchdog();
  await sdNotify("STOPPING=1");
  server.forceShutdown();
  await tracing.shutdown();
  await metricsServer?.close();
  await launcher.detachAll();
  events.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    log.error(err.message);
    process.exit(1);
  },
);
