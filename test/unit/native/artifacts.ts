import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildNative, type NativeArtifacts } from "../../../runtime/native/build.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

let built: Promise<NativeArtifacts> | undefined;

/** Builds (or reuses) the addon and init under build/native and points the vsock loader at this addon. */
export function nativeArtifacts(): Promise<NativeArtifacts> {
  built ??= buildNative({ outDir: path.join(repo, "build", "native") }).then((a) => {
    process.env.KUASAR_VSOCK_ADDON = a.vsockAddon;
    return a;
  });
  return built;
}
