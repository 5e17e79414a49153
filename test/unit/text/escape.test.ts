import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { escapeText, StreamEscaper } from "../../../runtime/text/escape.ts";

describe("escapeText", () => {
  test("printable text, valid UTF-8 included, is kept as it is", () => {
    const text = "vmm-task serving ttrpc on vsock port 1024 — Grüße 日本語 😀 [ok] 100%";
    assert.equal(escapeText(text), text);
    assert.equal(escapeText(""), "");
  });

  test("control characters become escapes that read back: C0, DEL, C1, backslash", () => {
    assert.equal(escapeText("a\nb\r\tc"), "a\\nb\\r\\tc");
    assert.equal(escapeText("\x1b[2J\x1b]0;owned\x07"), "\\x1b[2J\\x1b]0;owned\\x07");
    assert.equal(escapeText("\x00\x7f"), "\\x00\\x7f");
    // U+009B is CSI on terminals that take 8-bit controls; U+0085 is NEL, a line break to some readers.
    assert.equal(escapeText("\u009b31m\u0085"), "\\u009b31m\\u0085");
    // A literal backslash cannot pass for an escape.
    assert.equal(escapeText("C:\\new"), "C:\\\\new");
  });

  test("line separators, bidi overrides and lone surrogates are escaped; surrogate pairs are kept", () => {
    assert.equal(escapeText("a\u2028b\u2029c"), "a\\u2028b\\u2029c");
    assert.equal(escapeText("ok\u202egnp.exe\u2066x\u2069"), "ok\\u202egnp.exe\\u2066x\\u2069");
    assert.equal(escapeText("x\ud800y\udfffz"), "x\\ud800y\\udfffz");
    assert.equal(escapeText("\ud83d\ude00"), "😀");
  });

  test("attack: a forged log line stays on the line it came in", () => {
    const forged = "disk full\n[2025-01-01T00:00:00.000Z INFO vmm_sandboxer] sandbox web-0 stopped";
    const out = escapeText(forged);
    assert.equal(out.split("\n").length, 1);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    assert.ok(!/[\x00-\x1f\x7f-\x9f]/.test(out));
  });

  test("multiline keeps newlines, tabs and CRLF for a terminal, and escapes a lone CR", () => {
    assert.equal(escapeText("a\tb\r\nc\n", { multiline: true }), "a\tb\r\nc\n");
    // A CR without LF would let the next text overwrite the line on screen.
    assert.equal(escapeText("real\rfake\x1b[K\n", { multiline: true }), "real\\rfake\\x1b[K\n");
  });

  test("maxLength cuts the result and says how much was cut, never inside an escape", () => {
    assert.equal(escapeText("abcdefghij", { maxLength: 4 }), "abcd... (6 more characters cut)");
    assert.equal(escapeText("ab\x1bcd", { maxLength: 4 }), "ab... (3 more characters cut)");
    assert.equal(escapeText("abcd", { maxLength: 4 }), "abcd");
    const huge = escapeText("\n".repeat(1_000_000), { maxLength: 100 });
    assert.ok(huge.length < 140, huge);
  });
});

describe("StreamEscaper", () => {
  test("a UTF-8 sequence and a CRLF split between chunks come out whole", () => {
    const e = new StreamEscaper({ multiline: true });
    const bytes = Buffer.from("ü😀 line\r\nnext\r");
    let out = "";
    for (const b of bytes) out += e.write(Buffer.from([b]));
    out += e.end();
    assert.equal(out, "ü😀 line\r\nnext\\r");
  });

  test("escape sequences in any chunking are escaped; invalid UTF-8 prints as U+FFFD", () => {
    const e = new StreamEscaper({ multiline: true });
    const out =
      e.write(Buffer.from([0x1b, 0x5b, 0x33])) + e.write(Buffer.from([0x31, 0x6d, 0x9b, 0xff, 0x0a])) + e.end();
    assert.equal(out, "\\x1b[31m\ufffd\ufffd\n");
  });
});
