/**
 * The agent's startup data file, written by the rootfs stage and mapped by vmm-task. Node copies the V8 startup data
 * of its --snapshot-blob into an allocation it keeps for its whole life; glibc's malloc serves one that large with
 * mmap, its bytes starting after the chunk's two size words, 16 bytes into the first page. The file holds the same
 * bytes at the same offset, zeros before them, so its pages line up with the copy's and can be mapped over them.
 */
export const STARTUP_DATA_OFFSET = 16;

/** The startup data file's contents for V8 startup data `data`. */
export function startupDataFile(data: Uint8Array): Buffer {
  return Buffer.concat([Buffer.alloc(STARTUP_DATA_OFFSET), data]);
}
