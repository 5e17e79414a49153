import path from "node:path";
import { fileURLToPath } from "node:url";
import { GENERATED_FILE, writeGenerated } from "./manifests.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
console.log(`${GENERATED_FILE} ${(await writeGenerated(repo)) ? "written" : "is up to date"}`);
