// The daemon's importers (two dozen files) still name this module; the logger is runtime/log/log.ts.
export * from "../log/log.ts";
