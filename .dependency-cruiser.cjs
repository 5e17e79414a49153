// The layers of kuasar-vmm, checked by `npm run lint` (docs/development.md explains them). Arrows point down:
//   entry points (runtime/*/main.ts)  wire the programs together; nothing imports them
//   daemon (sandboxer) · agent (vmm-task) · ctl · doctor · shim   the programs; doctor and ctl may read the daemon's
//                                                               config and records, nobody else crosses sideways
//   log                                one logger for every program
//   contract                           what programs agree on (ports, ids, kernel params, share paths, task link)
//   protocol (protos, ttrpc, transport, streaming, grpc) and base (text, native, cgroups)
// Build (pipeline/) and deploy (installers/) stand apart from the runtime; bench/ and scripts/ share testkit/ with
// test/ and never import test/ itself.
const PROTOCOL = "^runtime/(protos|ttrpc|transport|streaming|grpc|text|native|cgroups)/";
const PROGRAMS = "^runtime/(sandboxer|agent|ctl|doctor|shim)/";
const ENTRY = "^runtime/[^/]+/main\\.ts$";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "A cycle hides which module owns what; split the shared part out.",
      from: {},
      to: { circular: true },
    },
    {
      name: "protocol-is-the-bottom",
      severity: "error",
      comment: "protos, ttrpc, transport, streaming, grpc and the base modules know nothing of the programs.",
      from: { path: PROTOCOL },
      to: { path: "^runtime/(contract|log|sandboxer|agent|ctl|doctor|shim|node-installer)/" },
    },
    {
      name: "contract-imports-only-protocol",
      severity: "error",
      comment: "Both sides of the host<->guest boundary take the contract, so it cannot depend on either.",
      from: { path: "^runtime/contract/" },
      to: { path: "^runtime/", pathNot: [PROTOCOL, "^runtime/contract/"] },
    },
    {
      name: "log-imports-only-contract-and-base",
      severity: "error",
      from: { path: "^runtime/log/" },
      to: { path: PROGRAMS },
    },
    {
      name: "trace-imports-no-program",
      severity: "error",
      from: { path: "^runtime/trace/" },
      to: { path: PROGRAMS },
    },
    {
      name: "nothing-imports-an-entry-point",
      severity: "error",
      comment: "An entry point parses argv and starts a program; share what it holds from a module instead.",
      from: {},
      to: { path: ENTRY },
    },
    {
      name: "agent-stands-alone",
      severity: "error",
      comment: "vmm-task runs in the guest: it shares only the contract and the protocol with the host.",
      from: { path: "^runtime/agent/" },
      to: { path: "^runtime/(sandboxer|ctl|doctor|shim)/" },
    },
    {
      name: "only-the-guest-imports-the-agent",
      severity: "error",
      from: { path: "^runtime/", pathNot: "^runtime/agent/" },
      to: { path: "^runtime/agent/" },
    },
    {
      name: "daemon-does-not-import-tools",
      severity: "error",
      comment: "ctl, doctor and the shim read the daemon's state; the daemon never needs them (its main.ts may).",
      from: { path: "^runtime/sandboxer/", pathNot: ENTRY },
      to: { path: "^runtime/(ctl|doctor|shim)/" },
    },
    {
      name: "shim-is-small",
      severity: "error",
      comment: "containerd runs the shim on every restart: it talks to the task API and nothing else.",
      from: { path: "^runtime/shim/" },
      to: { path: "^runtime/(sandboxer|ctl|doctor)/" },
    },
    {
      name: "doctor-does-not-import-ctl",
      severity: "error",
      from: { path: "^runtime/doctor/" },
      to: { path: "^runtime/ctl/" },
    },
    {
      name: "runtime-does-not-import-build-deploy-or-tests",
      severity: "error",
      comment: "What ships on a node must not pull in the build pipeline, installers, benchmarks or test code.",
      from: { path: "^runtime/" },
      to: { path: "^(pipeline|installers|test|testkit|bench|scripts)/" },
    },
    {
      name: "deploy-does-not-import-build",
      severity: "error",
      comment: "An installer runs on a node; the build pipeline may call it (install-vmm), not the other way.",
      from: { path: "^installers/" },
      to: { path: "^pipeline/" },
    },
    {
      name: "build-and-deploy-do-not-import-tests",
      severity: "error",
      from: { path: "^(pipeline|installers)/" },
      to: { path: "^(test|testkit|bench|scripts)/" },
    },
    {
      name: "bench-and-scripts-use-the-testkit",
      severity: "error",
      comment: "Harnesses live in testkit/, shared by tests, benchmarks and the demo.",
      from: { path: "^(bench|scripts|testkit)/" },
      to: { path: "^test/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^runtime/protos/gen/" },
    // Type-only imports count: a contract type that imports a driver is the cycle this guards against.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    moduleSystems: ["es6"],
  },
};
