import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { packageVersion } from "../../pipeline/node-installer/image.ts";
import { GENERATED_FILE, render } from "./manifests.ts";

// Writes kuasar-vmm.yaml for the image tag package.json names.
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const file = path.join(repo, GENERATED_FILE);
const text = render(await packageVersion(repo));
const old = await readFile(file, "utf8").catch(() => "");
if (old === text) console.log(`${GENERATED_FILE} is up to date`);
else {
  await writeFile(file, text);
  console.log(`wrote ${GENERATED_FILE}`);
}
