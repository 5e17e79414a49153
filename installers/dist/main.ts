import { installCli } from "./cli.ts";

// lib/install.cjs in the release bundle (install.sh runs it with --bin-dir pointing at the bundle's bin/).
installCli(process.argv.slice(2), { out: (l) => console.log(l), err: (l) => console.error(l) }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    console.error(`install.sh: ${err.stack ?? err.message}`);
    process.exitCode = 1;
  },
);
