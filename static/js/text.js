// What other members (and the relay) write, made safe to show, by the rules of
// pugfast/client/text.py (docs/client.md, "Text that others send"): every control character
// but the line break, every format character (bidi overrides and isolates, zero-width spaces
// and joiners, the BOM, ...) and the line and paragraph separators are shown as an escape,
// \u202e (\U000e0001 past U+FFFF; a tab is \u0009), in a span of its own so that it cannot be
// mistaken for typed text. A line break stays a line break: the page shows a message's lines.

const ESCAPED = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;
const CANDIDATES = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

export function codeEscape(ch) {
  const code = ch.codePointAt(0);
  return code <= 0xffff
    ? `\\u${code.toString(16).padStart(4, "0")}`
    : `\\U${code.toString(16).padStart(8, "0")}`;
}

export function isEscaped(ch) {
  return ch !== "\n" && ESCAPED.test(ch);
}

// `text` as DOM nodes: text nodes for what shows as itself, <span class="escaped"> for each
// escape. Only textContent is ever set: nothing is parsed as HTML.
export function shownNodes(text) {
  const nodes = [];
  let from = 0;
  for (const match of text.matchAll(CANDIDATES)) {
    const ch = match[0];
    if (ch === "\n") continue;
    if (match.index > from) nodes.push(document.createTextNode(text.slice(from, match.index)));
    const span = document.createElement("span");
    span.className = "escaped";
    span.textContent = codeEscape(ch);
    nodes.push(span);
    from = match.index + ch.length;
  }
  if (from < text.length) nodes.push(document.createTextNode(text.slice(from)));
  return nodes;
}

// The same, as one string (for document.title and other places without markup).
export function shownString(text) {
  return text.replace(CANDIDATES, (ch) => (ch === "\n" ? ch : codeEscape(ch)));
}
