import { loadAddon } from "../load.ts";

/** The memory calls of runtime/native/ns/memory.c. Errors carry the errno name as code. */
export interface HeapAddon {
  /** malloc_trim(0): returns free pages of the C heap, inside it as well as at its top; true if any were released. */
  trimHeap(): boolean;
  /**
   * Finds this process's private copy of the bytes `file` holds after `offset` (laid out at that offset into a page,
   * as the file is) and maps the file over the copy's whole pages: the same bytes at the same addresses, now the
   * file's pages. Works on a thread of its own at idle priority. Resolves to the bytes replaced, 0 when there is no
   * such copy; rejects when the file cannot be read or is no longer than `offset`.
   */
  mapFileOverCopy(file: string, offset: number): Promise<number>;
}

export function heapAddon(): HeapAddon {
  return loadAddon<HeapAddon>("ns", "KUASAR_NS_ADDON");
}
