// The plaintext inside each ciphertext (docs/client.md, "Plaintext"): UTF-8 JSON
//   {"text": string, "ts": ms, "sid": b64u(8 random bytes), "n": counter from 1}
// That is protocol version 1, kept only to say "this room needs a newer client" to older
// clients and to recognise their messages; version 2 (senderkeys.js) carries {"text", "ts"}.

import { b64uDecode, utf8Decode, utf8Encode } from "./encoding.js";

export const SID_BYTES = 8;

export class MessageFormatError extends Error {
  constructor(reason) {
    super(`malformed message: ${reason}`);
    this.name = "MessageFormatError";
  }
}

// A lone surrogate (JSON can escape one: "\ud800") is not Unicode; each becomes U+FFFD, as
// pugfast/client/text.py's repair() does, so both clients show the same text.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function repair(text) {
  return text.replace(LONE_SURROGATE, "\uFFFD");
}

export function encodeMessage({ text, ts, sid, n, upgrade }) {
  return utf8Encode(JSON.stringify({ text, ts, sid, n, upgrade }));
}

// The plaintext of a protocol-version-2 message: {"text": string, "ts": ms}.
export function encodeText({ text, ts }) {
  return utf8Encode(JSON.stringify({ text, ts }));
}

function parseObject(padded) {
  let value;
  try {
    value = JSON.parse(utf8Decode(padded));
  } catch {
    throw new MessageFormatError("not UTF-8 JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new MessageFormatError("not an object");
  }
  return value;
}

// A decrypted version-2 plaintext: {text (repaired), ts}. Throws MessageFormatError.
export function decodeText(padded) {
  const { text, ts } = parseObject(padded);
  if (typeof text !== "string") throw new MessageFormatError("text");
  if (!Number.isSafeInteger(ts) || ts < 0) throw new MessageFormatError("ts");
  return { text: repair(text), ts };
}

// Parses a decrypted, padded plaintext. Unknown fields are ignored, as everywhere in the
// protocol. Lone surrogates in the text are repaired (above). Throws MessageFormatError
// when a field is missing or of the wrong kind.
export function decodeMessage(padded) {
  const { text, ts, sid, n, upgrade } = parseObject(padded);
  if (typeof text !== "string") throw new MessageFormatError("text");
  if (!Number.isSafeInteger(ts) || ts < 0) throw new MessageFormatError("ts");
  if (typeof sid !== "string" || b64uDecode(sid)?.length !== SID_BYTES) {
    throw new MessageFormatError("sid");
  }
  if (!Number.isSafeInteger(n) || n < 1) throw new MessageFormatError("n");
  const message = { text: repair(text), ts, sid, n };
  if (upgrade !== undefined) message.upgrade = true;
  return message;
}
