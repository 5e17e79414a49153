// Sandbox, container and exec ids, as containerd validates them (github.com/containerd/containerd,
// pkg/identifiers/validate.go): the host refuses what the guest would, and both use ids as file names.

/** containerd's maxLength. */
export const MAX_ID_LENGTH = 76;
/** Alphanumeric runs joined by single separators: no leading, trailing or doubled `.`, `_` or `-`. */
const ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

export type IdKind = "sandbox" | "container" | "exec";

/** Why id is not a valid identifier, naming the kind and what is allowed; undefined when it is valid. */
export function validateId(kind: IdKind, id: string): string | undefined {
  if (id === "") return `${kind} id is empty`;
  // Shown escaped and cut: the id may come from anyone and be any length.
  const shown = JSON.stringify(id.length > MAX_ID_LENGTH ? `${id.slice(0, MAX_ID_LENGTH)}…` : id);
  if (id.length > MAX_ID_LENGTH) {
    return `${kind} id ${shown} is too long (${id.length} characters): containerd allows at most ${MAX_ID_LENGTH}`;
  }
  if (!ID.test(id)) {
    return (
      `${kind} id ${shown} is invalid: use letters, digits and single separators (. _ -) between them, ` +
      `at most ${MAX_ID_LENGTH} characters (containerd's identifier rule)`
    );
  }
  return undefined;
}
