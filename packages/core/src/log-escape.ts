/**
 * Text that came off the wire (worker names, peers' error messages, close reasons) made safe to log.
 *
 * A peer controls these strings before it has authenticated; printed raw, a newline or an ANSI
 * escape in a worker name forges whole log lines ("worker x joined") or rewrites the terminal.
 * Control characters (C0, DEL, C1), line/paragraph separators and bidi overrides become visible
 * \xNN / \uNNNN escapes, and the result is cut to `max` characters.
 */

// C0 controls, DEL, C1 controls, U+2028/2029 (line breaks to many viewers), bidi embeddings/overrides/isolates.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `s` with control characters escaped and at most `max` characters (then '…' and the original length). */
export function escapeForLog(s: unknown, max = 200): string {
  const str = typeof s === 'string' ? s : String(s);
  const cut = str.length > max ? str.slice(0, max) : str;
  const esc = cut.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
  return str.length > max ? `${esc}… (${str.length} chars)` : esc;
}
