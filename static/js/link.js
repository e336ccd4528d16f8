// The room link: /r/{room}#k={b64u(32-byte key)}&s={secret}. The fragment never leaves the
// browser (RFC 3986 §3.5), so neither the key nor the room secret reaches the relay in a URL.

import { b64uDecode } from "./encoding.js";
import { KEY_BYTES } from "./crypto.js";

const ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;
const ROOM_PATH = /^\/r\/([A-Za-z0-9_-]{22})\/?$/;

export function isRoomId(text) {
  return ID_PATTERN.test(text) && b64uDecode(text)?.length === 16;
}

// The room id in a path like "/r/{room}", or null.
export function roomFromPath(pathname) {
  const match = ROOM_PATH.exec(pathname);
  return match && isRoomId(match[1]) ? match[1] : null;
}

// {key: Uint8Array(32), keyText, secret} from "#k=...&s=...", or null when the fragment is
// missing, has other or repeated fields, or either value is not exactly the right shape.
export function parseFragment(hash) {
  if (!hash.startsWith("#")) return null;
  const fields = new Map();
  for (const part of hash.slice(1).split("&")) {
    const eq = part.indexOf("=");
    if (eq < 0) return null;
    const name = part.slice(0, eq);
    if (fields.has(name)) return null;
    fields.set(name, part.slice(eq + 1));
  }
  if (fields.size !== 2 || !fields.has("k") || !fields.has("s")) return null;
  const keyText = fields.get("k");
  const secret = fields.get("s");
  const key = b64uDecode(keyText);
  if (key === null || key.length !== KEY_BYTES || !isRoomId(secret)) return null;
  return { key, keyText, secret };
}

export function buildLink(origin, room, keyText, secret) {
  return `${origin}/r/${room}#k=${keyText}&s=${secret}`;
}
