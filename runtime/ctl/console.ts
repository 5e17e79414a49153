import { randomBytes } from "node:crypto";
import type { Duplex, Writable } from "node:stream";
import { DEBUG_CONSOLE_PORT } from "../contract/ports.ts";
import type { AgentAddress } from "../sandboxer/hypervisor/vm-api.ts";
import { dial, formatAddress, type TransportAddress } from "../transport/address.ts";

export function consoleAddress(agent: AgentAddress): TransportAddress {
  return agent.kind === "hvsock"
    ? { transport: "hvsock", path: agent.udsPath, port: DEBUG_CONSOLE_PORT }
    : { transport: "vsock", cid: agent.cid, port: DEBUG_CONSOLE_PORT };
}

/** Connects to a sandbox's debug console; errors say whether the VM or the console is missing. */
export async function dialConsole(id: string, agent: AgentAddress, timeoutMs: number): Promise<Duplex> {
  const addr = consoleAddress(agent);
  try {
    return await dial(addr, { timeoutMs });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // Hybrid vsock closes an unanswered CONNECT; AF_VSOCK resets a connection to a port nobody listens on.
    if (e.code === "EHVSOCKCLOSED" || e.code === "ECONNRESET") {
      throw new Error(
        `sandbox ${id}: nothing listens on the guest's debug console (${formatAddress(addr)}). It runs only when the ` +
          "VM booted with task.debug: set debug = true under [hypervisor.task] in the daemon's config (or add task.debug " +
          "to kernel_params), restart the daemon, and recreate the pod",
      );
    }
    throw new Error(`sandbox ${id}: cannot reach the debug console at ${formatAddress(addr)}: ${e.message}`);
  }
}

const MARK = "__kuasar_ctl_";
/** Lines the guest tty reads in canonical mode must stay below its 4096-byte buffer. */
const CHUNK = 768;

/**
 * What exec types into the debug shell. First a setup line (no echo, no CR before LF, no prompts) that answers
 * with a ready marker; then the command, base64-encoded so no quoting, line length or unbalanced syntax can confuse
 * the interactive shell, run by `sh -c` between a start and an end marker that carries its exit status. Each marker
 * is printed from two printf arguments, so the shell echoing the typed line never produces it.
 */
export function execScript(command: string, nonce: string): { setup: string; run: string } {
  const b64 = Buffer.from(command).toString("base64");
  const assign: string[] = [];
  for (let i = 0; i < b64.length || i === 0; i += CHUNK) {
    assign.push(`__kx=${i === 0 ? "" : "$__kx"}${b64.slice(i, i + CHUNK)}`);
  }
  return {
    setup: `stty -echo -onlcr 2>/dev/null; PS1=''; PS2=''; printf '%s%s\\n' ${MARK} R${nonce}\n`,
    run:
      `${assign.join("\n")}\n` +
      `printf '%s%s\\n' ${MARK} S${nonce}; sh -c "$(echo "$__kx" | base64 -d)" </dev/null; ` +
      `printf '%s%s:%s\\n' ${MARK} E${nonce} "$?"\n`,
  };
}

export interface Parsed {
  /** The setup line ran: the command can be sent. */
  ready: boolean;
  /** Command output (stdout and stderr, merged by the pty). */
  data: Buffer;
  /** The command's exit status, once its end marker arrived. */
  exit?: number;
}

/**
 * Splits the console's byte stream into the command's output and its exit status. Everything before the start
 * marker (the shell's banner, prompts, echoed input) is dropped. If stty was unavailable the tty still turns LF into
 * CRLF; the start marker's line ending shows it, and CRLF is turned back into LF.
 */
export class ExecParser {
  private buf = "";
  private phase: "setup" | "start" | "body" | "done" = "setup";
  private crlf = false;
  private readonly ready: string;
  private readonly start: string;
  private readonly end: string;

  constructor(nonce: string) {
    this.ready = `${MARK}R${nonce}`;
    this.start = `${MARK}S${nonce}`;
    this.end = `${MARK}E${nonce}:`;
  }

  feed(chunk: Buffer): Parsed {
    // latin1 maps bytes to code units one to one, so slicing and converting back is lossless.
    this.buf += chunk.toString("latin1");
    const out: Parsed = { ready: false, data: Buffer.alloc(0) };
    let text = "";
    if (this.phase === "setup") {
      const i = this.buf.indexOf(this.ready);
      if (i < 0) return this.keepTail(this.ready.length, out);
      this.buf = this.buf.slice(i + this.ready.length);
      this.phase = "start";
      out.ready = true;
    }
    if (this.phase === "start") {
      const i = this.buf.indexOf(this.start);
      if (i < 0) return this.keepTail(this.start.length, out);
      const rest = this.buf.slice(i + this.start.length);
      if (rest === "" || rest === "\r") {
        this.buf = this.buf.slice(i);
        return out;
      }
      this.crlf = rest.startsWith("\r\n");
      this.buf = rest.slice(this.crlf ? 2 : rest.startsWith("\n") ? 1 : 0);
      this.phase = "body";
    }
    if (this.phase === "body") {
      const j = this.buf.indexOf(this.end);
      if (j >= 0) {
        text = this.buf.slice(0, j);
        const m = /^(\d+)\r?\n/.exec(this.buf.slice(j + this.end.length));
        if (m) {
          out.exit = Number(m[1]);
          this.phase = "done";
          this.buf = "";
        } else {
          this.buf = this.buf.slice(j);
        }
      } else {
        // Hold back what could be the start of the end marker (and a CR whose LF has not arrived).
        let keep = Math.min(this.buf.length, this.end.length - 1);
        while (keep > 0 && !this.end.startsWith(this.buf.slice(this.buf.length - keep))) keep--;
        if (this.crlf && this.buf.length > keep && this.buf[this.buf.length - keep - 1] === "\r") keep++;
        text = this.buf.slice(0, this.buf.length - keep);
        this.buf = this.buf.slice(this.buf.length - keep);
      }
    }
    if (this.crlf) text = text.replace(/\r\n/g, "\n");
    out.data = Buffer.from(text, "latin1");
    return out;
  }

  private keepTail(markerLength: number, out: Parsed): Parsed {
    this.buf = this.buf.slice(-(markerLength - 1));
    return out;
  }
}

export const TIMED_OUT = 124;

/**
 * Runs a command in the guest through a connected debug console and writes its output to `out`. Resolves with the
 * command's exit status, or TIMED_OUT after timeoutMs (the command gets ^C, then the connection closes, which
 * kills the console's shell and hangs up its terminal). Rejects when the console closes before the command ends.
 */
export function execOverConsole(sock: Duplex, command: string, out: Writable, timeoutMs?: number): Promise<number> {
  const nonce = randomBytes(6).toString("hex");
  const script = execScript(command, nonce);
  const parser = new ExecParser(nonce);
  return new Promise((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (err: Error | undefined, code = 0) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(code);
    };
    sock.on("data", (chunk: Buffer) => {
      const r = parser.feed(chunk);
      if (r.ready) sock.write(script.run);
      if (r.data.length > 0) out.write(r.data);
      if (r.exit !== undefined) finish(undefined, r.exit);
    });
    sock.on("error", (e: Error) => finish(new Error(`debug console: ${e.message}`)));
    sock.on("close", () =>
      finish(
        new Error("the debug console closed before the command finished (did the VM stop, or did it kill the shell?)"),
      ),
    );
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        sock.write("\x03");
        // A moment for the interrupt to land before the hang-up.
        setTimeout(() => finish(undefined, TIMED_OUT), 300).unref();
      }, timeoutMs);
    }
    sock.write(script.setup);
  });
}

/** Ctrl-] leaves an interactive session, as in telnet: ^C and ^D belong to the guest shell. */
export const ESCAPE = 0x1d;

/**
 * Raw passthrough between a local terminal (or pipe) and the debug console. With a terminal, it is put in raw mode
 * and Ctrl-] disconnects. Piped input ends with an `exit` line, so the guest shell leaves after the last command
 * (a ^D would be lost when it arrives before the shell switched its terminal to raw mode).
 */
export function shellOverConsole(sock: Duplex, stdin: NodeJS.ReadStream, stdout: Writable): Promise<void> {
  const tty = stdin.isTTY === true;
  if (tty) stdin.setRawMode(true);
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      stdin.off("data", onInput);
      stdin.off("end", onEnd);
      if (tty) stdin.setRawMode(false);
      stdin.pause();
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const onInput = (d: Buffer) => {
      const esc = tty ? d.indexOf(ESCAPE) : -1;
      if (esc < 0) {
        sock.write(d);
        return;
      }
      if (esc > 0) sock.write(d.subarray(0, esc));
      done();
    };
    const onEnd = () => {
      if (sock.writable) sock.write("\nexit\n");
    };
    stdin.on("data", onInput);
    stdin.on("end", onEnd);
    sock.on("data", (d: Buffer) => stdout.write(d));
    sock.on("error", (e: Error) => done(new Error(`debug console: ${e.message}`)));
    sock.on("close", () => done());
    stdin.resume();
  });
}
