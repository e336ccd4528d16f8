// The room's encryption (docs/protocol.md §7.2; docs/client.md has the full format):
//   ciphertext = 0x01 || iv (12 random bytes) || AES-256-GCM(key, iv, padded plaintext,
//                                                           aad = ASCII(room id))
// The plaintext is padded with spaces to a size bucket so lengths leak only the bucket.

import { concatBytes, utf8Encode } from "./encoding.js";
import { WORDS } from "./words.js";

export const VERSION = 0x01;
export const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
export const OVERHEAD = 1 + IV_BYTES + TAG_BYTES;
export const SMALLEST_BUCKET = 256;
// The key fingerprint, version 2 (docs/client.md, "Key fingerprint").
const FINGERPRINT_SALT = "pugfast-fingerprint-v2:";
const FINGERPRINT_ITERATIONS = 65536;
const FINGERPRINT_WORDS = 9;
const BITS_PER_WORD = 11;
const SPACE = 0x20;

export class DecryptError extends Error {
  constructor(reason) {
    super(`could not be decrypted: ${reason}`);
    this.name = "DecryptError";
  }
}

// A fresh 32-byte key from the browser's CSPRNG, as raw bytes for the link. The CryptoKey
// made here is thrown away; the room page imports its own, non-extractable one.
export async function generateKeyBytes() {
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt"]);
  return new Uint8Array(await crypto.subtle.exportKey("raw", key));
}

export function importRoomKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

// The bucket a plaintext of `length` bytes is padded to: the smallest of 256, 512, 1024, ...
// that holds it.
export function bucketFor(length) {
  let bucket = SMALLEST_BUCKET;
  while (bucket < length) bucket *= 2;
  return bucket;
}

// The largest plaintext bucket whose ciphertext (overhead bytes more) fits in maxMessageBytes,
// or 0 if none does.
export function largestBucket(maxMessageBytes, overhead = OVERHEAD) {
  let bucket = 0;
  for (let b = SMALLEST_BUCKET; b + overhead <= maxMessageBytes; b *= 2) bucket = b;
  return bucket;
}

export function pad(plaintext) {
  const padded = new Uint8Array(bucketFor(plaintext.length)).fill(SPACE);
  padded.set(plaintext);
  return padded;
}

export async function encrypt(key, roomId, plaintext) {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: utf8Encode(roomId), tagLength: TAG_BYTES * 8 },
    key,
    pad(plaintext),
  );
  return concatBytes(Uint8Array.of(VERSION), iv, new Uint8Array(sealed));
}

// Returns the padded plaintext. Throws DecryptError for an unknown version, a message too
// short to hold an IV and tag, or one that fails authentication (wrong key, wrong room,
// altered bytes).
export async function decrypt(key, roomId, message) {
  if (message.length < OVERHEAD) throw new DecryptError("too short");
  if (message[0] !== VERSION) throw new DecryptError(`unknown version ${message[0]}`);
  try {
    const plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: message.subarray(1, 1 + IV_BYTES),
        additionalData: utf8Encode(roomId),
        tagLength: TAG_BYTES * 8,
      },
      key,
      message.subarray(1 + IV_BYTES),
    );
    return new Uint8Array(plain);
  } catch {
    throw new DecryptError("authentication failed");
  }
}

// Nine words for comparing keys out of band: the first 99 bits of
// PBKDF2-HMAC-SHA-256(raw key, "pugfast-fingerprint-v2:" + room id, 65,536 iterations), 11
// bits (one word of the 2048) at a time, most significant first. Forging a key whose words
// match costs about 2^99 guesses, each of them 65,536 iterations, not one hash; and since the
// room id is in the salt, matching words also mean the same room.
export async function fingerprint(raw, roomId) {
  const password = await crypto.subtle.importKey("raw", raw, "PBKDF2", false, ["deriveBits"]);
  const params = {
    name: "PBKDF2",
    hash: "SHA-256",
    salt: utf8Encode(FINGERPRINT_SALT + roomId),
    iterations: FINGERPRINT_ITERATIONS,
  };
  const bytes = new Uint8Array(await crypto.subtle.deriveBits(params, password, 128));
  const words = [];
  let pending = 0; // the bits read but not yet used, as the low `count` bits of `pending`
  let count = 0;
  for (const byte of bytes) {
    pending = (pending << 8) | byte;
    count += 8;
    if (count >= BITS_PER_WORD) {
      count -= BITS_PER_WORD;
      words.push(WORDS[pending >> count]);
      pending &= (1 << count) - 1;
      if (words.length === FINGERPRINT_WORDS) break;
    }
  }
  return words;
}
