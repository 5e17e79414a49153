/**
 * Text from inside a VM (console output, agent messages) made safe to print: control characters (C0, DEL, C1),
 * bidi controls and line/paragraph separators become visible escapes (\n, \r, \t, \x1b, \u009b, \u202e) and a
 * backslash becomes \\, so the text can neither drive a terminal nor start a log line of its own, and every escape
 * reads back unambiguously. Everything else, any valid UTF-8 included, is kept. Shared by the daemon, the agent and
 * kuasar-ctl, so it imports nothing from them.
 */

export interface EscapeOptions {
  /** Keep "\n", "\t" and a "\r" right before "\n" as they are (text shown line by line); otherwise one line. */
  multiline?: boolean;
  /** Longest result in characters; the rest is cut and replaced by a note saying how much was cut. */
  maxLength?: number;
}

// A fast check for text that needs no change. Surrogates are in it so lone ones are found; valid pairs are kept.
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const UNSAFE = /[\x00-\x1f\\\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]/;

const NAMED: Record<number, string> = { 9: "\\t", 10: "\\n", 13: "\\r", 92: "\\\\" };

/** The escape for one code point, or undefined when it prints as itself. */
function escapeOf(cp: number): string | undefined {
  const named = NAMED[cp];
  if (named) return named;
  if (cp < 0x20 || cp === 0x7f) return `\\x${cp.toString(16).padStart(2, "0")}`;
  const invisible =
    (cp >= 0x80 && cp <= 0x9f) || // C1: 0x9b is CSI on terminals that honour 8-bit controls
    cp === 0x061c ||
    cp === 0x200e ||
    cp === 0x200f ||
    (cp >= 0x2028 && cp <= 0x202e) || // line and paragraph separators, bidi embeddings and overrides
    (cp >= 0x2066 && cp <= 0x2069) || // bidi isolates
    (cp >= 0xd800 && cp <= 0xdfff); // a lone surrogate (a valid pair is one code point above 0xffff)
  return invisible ? `\\u${cp.toString(16).padStart(4, "0")}` : undefined;
}

/** `text` with every control character escaped (see the module comment), cut to opts.maxLength. */
export function escapeText(text: string, opts: EscapeOptions = {}): string {
  const max = opts.maxLength ?? Number.POSITIVE_INFINITY;
  if (text.length <= max && !UNSAFE.test(text)) return text;
  let out = "";
  for (let i = 0; i < text.length; ) {
    const cp = text.codePointAt(i)!;
    const width = cp > 0xffff ? 2 : 1;
    const keep = opts.multiline && (cp === 0x0a || cp === 0x09 || (cp === 0x0d && text.charCodeAt(i + 1) === 0x0a));
    const piece = (!keep && escapeOf(cp)) || text.slice(i, i + width);
    if (out.length + piece.length > max) return `${out}... (${text.length - i} more characters cut)`;
    out += piece;
    i += width;
  }
  return out;
}

/**
 * escapeText over a byte stream read in chunks: a UTF-8 sequence or a "\r\n" split between two chunks is held
 * until the next one. Invalid UTF-8 prints as U+FFFD.
 */
export class StreamEscaper {
  private readonly decoder = new TextDecoder("utf-8");
  private heldCr = false;

  constructor(private readonly opts: Pick<EscapeOptions, "multiline"> = {}) {}

  write(chunk: Uint8Array): string {
    return this.escape(this.decoder.decode(chunk, { stream: true }), false);
  }

  /** Whatever is still held, escaped: call once the stream has ended. */
  end(): string {
    return this.escape(this.decoder.decode(), true);
  }

  private escape(text: string, last: boolean): string {
    let t = this.heldCr ? `\r${text}` : text;
    this.heldCr = Boolean(this.opts.multiline) && !last && t.endsWith("\r");
    if (this.heldCr) t = t.slice(0, -1);
    return escapeText(t, this.opts);
  }
}
