/**
 * Sandbox and container ids become directory names under --dir and in the guest share, so anything that could
 * escape or confuse a path is refused. containerd's own ids are 64 hex chars; CRI names are DNS-like.
 */
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function validateId(kind: "sandbox" | "container" | "exec", id: string): string | undefined {
  if (id === "") return `${kind} id is empty`;
  if (!ID.test(id) || id.includes("..")) {
    const shown = id.length > 80 ? `${id.slice(0, 80)}…` : id;
    return `${kind} id '${shown}' is invalid: use 1-128 characters from [A-Za-z0-9_.-], starting with a letter or digit, without '..'`;
  }
  return undefined;
}
