// Loaded with --import by lazy.test.ts's child: records every @opentelemetry package the program imports.
import { appendFileSync } from "node:fs";
import { register } from "node:module";

if (import.meta.url.endsWith("?hooks")) {
  // Runs on the loader thread: resolve() sees each import before it is loaded.
} else {
  register(`${import.meta.url}?hooks`);
}

export async function resolve(specifier, context, next) {
  if (specifier.startsWith("@opentelemetry/")) appendFileSync(process.env.OTEL_IMPORTS_LOG, `${specifier}\n`);
  return next(specifier, context);
}
