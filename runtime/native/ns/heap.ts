import { loadAddon } from "../load.ts";

/** The malloc call of runtime/native/ns/ns.c. */
export interface HeapAddon {
  /** malloc_trim(0): returns free pages of the C heap, inside it as well as at its top; true if any were released. */
  trimHeap(): boolean;
}

export function heapAddon(): HeapAddon {
  return loadAddon<HeapAddon>("ns", "KUASAR_NS_ADDON");
}
