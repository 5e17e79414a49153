#!/usr/bin/env node
// Entry point: the pipeline is TypeScript, run through tsx without a separate compile step.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli.ts");
process.exitCode = await main(process.argv.slice(2));
