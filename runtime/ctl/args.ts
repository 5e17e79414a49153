/**
 * exec's arguments: options, then the id, then the command (after an optional "--"). Everything after the id
 * belongs to the command, so its own options (ls -l) are never taken for ours.
 */
export function splitExecArgs(argv: string[]): { own: string[]; id?: string; command: string[] } {
  const takesValue = new Set(["--timeout", "-d", "--dir", "-l", "--listen"]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return { own: argv.slice(0, i), id: argv[i + 1], command: argv.slice(i + 2) };
    if (takesValue.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith("-")) continue;
    const rest = argv.slice(i + 1);
    return { own: argv.slice(0, i), id: a, command: rest[0] === "--" ? rest.slice(1) : rest };
  }
  return { own: argv, command: [] };
}

/** Shell words for several arguments; a single argument is taken as a command line as it is. */
export function commandLine(args: string[]): string {
  if (args.length === 1) return args[0]!;
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(" ");
}
