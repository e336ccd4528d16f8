// Forward secrecy for a room: sender keys over ephemeral X25519, byte for byte as
// pugfast/client/senderkeys.py does it (docs/client.md, "Forward secrecy (protocol version 2)").
//
// The link's key only authenticates: each member announces an ephemeral X25519 public key
// sealed under a key derived from the link's key and bound to the room and its member id.
// Pairs of members derive a pairwise key (X25519, then HKDF-SHA-256); each member's sender key
// (a hash-ratchet chain: a fresh message key per message, the chain stepped forward) goes to
// each other member under their pairwise key. A newcomer gets every chain as it stands; when a
// member leaves, everyone starts a new chain. The private key is a non-extractable CryptoKey;
// everything here lives in this tab's memory only.

import { concatBytes, utf8Encode } from "./encoding.js";

export const VERSION = 0x02;
const KIND_KEYS = 0x01;
const KIND_MESSAGE = 0x02;
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const ANNOUNCE_BYTES = IV_BYTES + KEY_BYTES + TAG_BYTES;
const ENTRY_BYTES = 4 + IV_BYTES + 4 + 4 + KEY_BYTES + TAG_BYTES;
const MESSAGE_HEADER = 2 + 4 + 4;
export const MESSAGE_OVERHEAD = MESSAGE_HEADER + TAG_BYTES;
const MAX_SKIP = 4096;
export const PENDING_MS = 5000;
const MAX_PENDING = 64;

const LABEL = {
  announceKey: utf8Encode("pugfast/2 announce key"),
  announce: utf8Encode("pugfast/2 announce"),
  pair: utf8Encode("pugfast/2 pair"),
  senderKey: utf8Encode("pugfast/2 sender key"),
  messageKey: utf8Encode("pugfast/2 message key"),
  message: utf8Encode("pugfast/2 message"),
};

const subtle = () => crypto.subtle;

function u32(value) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

function readU32(bytes, at) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at);
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function hkdf(ikm, salt, info, length = KEY_BYTES) {
  const key = await subtle().importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, length * 8);
  return new Uint8Array(bits);
}

async function hmac(key, byte) {
  const hkey = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", hkey, Uint8Array.of(byte)));
}

async function aesKey(raw) {
  return subtle().importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

async function seal(raw, iv, plaintext, aad) {
  const key = raw instanceof CryptoKey ? raw : await aesKey(raw);
  const sealed = await subtle().encrypt({ name: "AES-GCM", iv, additionalData: aad }, key, plaintext);
  return new Uint8Array(sealed);
}

export class KeyError extends Error {}

async function open(raw, iv, sealed, aad) {
  const key = raw instanceof CryptoKey ? raw : await aesKey(raw);
  try {
    const plain = await subtle().decrypt({ name: "AES-GCM", iv, additionalData: aad }, key, sealed);
    return new Uint8Array(plain);
  } catch {
    throw new KeyError("authentication failed");
  }
}

export function announceKey(linkKey, room) {
  return hkdf(linkKey, utf8Encode(room), LABEL.announceKey);
}

// The announcement key as a non-extractable CryptoKey, made once from the link's raw key
// (which the page then overwrites).
export async function announceCryptoKey(linkKey, room) {
  const raw = await announceKey(linkKey, room);
  const key = await aesKey(raw);
  raw.fill(0);
  return key;
}

export function announceAad(room, member) {
  return concatBytes(LABEL.announce, utf8Encode(room), u32(member));
}

export function pairKey(shared, room, a, aPublic, b, bPublic) {
  const [lo, hi] = a < b ? [[a, aPublic], [b, bPublic]] : [[b, bPublic], [a, aPublic]];
  const info = concatBytes(LABEL.pair, u32(lo[0]), u32(hi[0]), lo[1], hi[1]);
  return hkdf(shared, utf8Encode(room), info);
}

export function senderKeyAad(room, sender, recipient) {
  return concatBytes(LABEL.senderKey, utf8Encode(room), u32(sender), u32(recipient));
}

export function messageAad(room, sender, chain, iteration) {
  return concatBytes(LABEL.message, utf8Encode(room), u32(sender), u32(chain), u32(iteration));
}

// One turn of the hash ratchet: [message key, next chain key].
export async function step(chainKey) {
  return Promise.all([hmac(chainKey, 0x01), hmac(chainKey, 0x02)]);
}

export async function messageCipher(messageKey) {
  const both = await hkdf(messageKey, new Uint8Array(0), LABEL.messageKey, KEY_BYTES + IV_BYTES);
  return [both.subarray(0, KEY_BYTES), both.subarray(KEY_BYTES)];
}

export function decodeFrame(data) {
  if (data.length < 2 || data[0] !== VERSION) return null;
  if (data[1] === KIND_MESSAGE && data.length >= MESSAGE_OVERHEAD) {
    return {
      kind: "message",
      chain: readU32(data, 2),
      iteration: readU32(data, 6),
      sealed: data.subarray(MESSAGE_HEADER),
    };
  }
  if (data[1] === KIND_KEYS && data.length >= 2 + ANNOUNCE_BYTES + 2) {
    let at = 2 + ANNOUNCE_BYTES;
    const count = (data[at] << 8) | data[at + 1];
    at += 2;
    if (data.length !== at + count * ENTRY_BYTES) return null;
    const entries = [];
    for (let i = 0; i < count; i++, at += ENTRY_BYTES) {
      entries.push({
        recipient: readU32(data, at),
        iv: data.subarray(at + 4, at + 4 + IV_BYTES),
        sealed: data.subarray(at + 4 + IV_BYTES, at + ENTRY_BYTES),
      });
    }
    return {
      kind: "keys",
      announceIv: data.subarray(2, 2 + IV_BYTES),
      announce: data.subarray(2 + IV_BYTES, 2 + ANNOUNCE_BYTES),
      entries,
    };
  }
  return null;
}

// What a frame means, as plain objects:
//   {type: "readable", sender, plaintext}
//   {type: "unreadable", sender, why}   why: "failed" | "repeated" | "no-keys" | "malformed"
//   {type: "key-problem", member, why}  why: "unauthenticated" | "changed"

// One member's keys for one connection to one room. Not safe for concurrent calls: the page
// runs every call on one promise chain (room.js).
export class KeyRing {
  #room;
  #announceKey = null;
  #private = null;
  #peers = new Map(); // member id -> {public, pair, chain, problem, waiting}
  #own = null; // {chain, iteration, key}
  #holders = new Set();
  #owed = new Set();
  me = 0;
  publicKey = null;
  outbox = [];

  constructor(room) {
    this.#room = room;
  }

  // announce: the AES-GCM CryptoKey from announceCryptoKey(); keyPair and chainKey are for
  // test vectors only.
  async init(announce, { keyPair = null, chainKey = null } = {}) {
    this.#announceKey = announce;
    const pair = keyPair ?? (await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"]));
    this.#private = pair.privateKey;
    this.publicKey = new Uint8Array(await subtle().exportKey("raw", pair.publicKey));
    this.#own = {
      chain: 1,
      iteration: 0,
      key: chainKey ?? crypto.getRandomValues(new Uint8Array(KEY_BYTES)),
    };
  }

  #peer(member) {
    let peer = this.#peers.get(member);
    if (peer === undefined) {
      peer = { public: null, pair: null, chain: null, problem: false, waiting: [] };
      this.#peers.set(member, peer);
    }
    return peer;
  }

  async start(me, present) {
    this.me = me;
    for (const member of present) if (member !== me) this.#peer(member);
    await this.#flush(true);
  }

  onJoin(member) {
    this.#peer(member);
  }

  async onLeave(member) {
    if (!this.#peers.delete(member)) return;
    await this.rekey();
  }

  // Starts a new chain and queues it for every member whose key is known.
  async rekey() {
    this.#own.key.fill(0);
    this.#own = {
      chain: this.#own.chain + 1,
      iteration: 0,
      key: crypto.getRandomValues(new Uint8Array(KEY_BYTES)),
    };
    this.#holders = new Set();
    this.#owed = new Set([...this.#peers].filter(([, p]) => p.pair !== null).map(([m]) => m));
    await this.#flush(false);
  }

  present() {
    return new Set(this.#peers.keys());
  }

  // The members present whose keys have not come yet (and have not failed).
  awaiting() {
    return new Set([...this.#peers].filter(([, p]) => p.pair === null && !p.problem).map(([m]) => m));
  }

  holders() {
    return new Set([...this.#holders].filter((m) => this.#peers.has(m)));
  }

  async seal(padded) {
    const own = this.#own;
    const [messageKey, next] = await step(own.key);
    own.key.fill(0);
    own.key = next;
    const [key, iv] = await messageCipher(messageKey);
    messageKey.fill(0);
    const aad = messageAad(this.#room, this.me, own.chain, own.iteration);
    const sealed = await seal(key, iv, padded, aad);
    const frame = concatBytes(Uint8Array.of(VERSION, KIND_MESSAGE), u32(own.chain), u32(own.iteration), sealed);
    own.iteration += 1;
    return frame;
  }

  // Whether some member is owed this member's chain.
  owes() {
    return this.#owed.size > 0;
  }

  // Queues one keys frame with this member's chain for every member owed it. The page calls
  // it soon after frames arrive (and before sealing), so frames that arrive together are
  // answered together: a join in a room of 64 stays within the relay's rate limit.
  async flush() {
    await this.#flush(false);
  }

  async #flush(force) {
    if (this.#owed.size === 0 && !force) return;
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const announce = await seal(this.#announceKey, iv, this.publicKey, announceAad(this.#room, this.me));
    const plain = concatBytes(u32(this.#own.chain), u32(this.#own.iteration), this.#own.key);
    const entries = [];
    for (const member of [...this.#owed].sort((a, b) => a - b)) {
      const entryIv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
      const aad = senderKeyAad(this.#room, this.me, member);
      entries.push(u32(member), entryIv, await seal(this.#peers.get(member).pair, entryIv, plain, aad));
      this.#holders.add(member);
    }
    plain.fill(0);
    this.#owed = new Set();
    const count = Uint8Array.of(entries.length / 3 >> 8, (entries.length / 3) & 0xff);
    this.outbox.push(concatBytes(Uint8Array.of(VERSION, KIND_KEYS), iv, announce, count, ...entries));
  }

  async onFrame(sender, data, now) {
    const frame = decodeFrame(data);
    if (frame === null) return [{ type: "unreadable", sender, why: "malformed" }];
    const peer = this.#peers.get(sender);
    // Not a member present: no state is kept for it.
    if (peer === undefined) return [{ type: "unreadable", sender, why: "failed" }];
    if (frame.kind === "keys") return this.#keys(sender, peer, frame, now);
    if (peer.problem) return [{ type: "unreadable", sender, why: "failed" }];
    if (peer.chain === null || frame.chain !== peer.chain.chain) {
      if ((peer.chain !== null && frame.chain < peer.chain.chain) || peer.waiting.length >= MAX_PENDING) {
        return [{ type: "unreadable", sender, why: "no-keys" }];
      }
      peer.waiting.push({ deadline: now + PENDING_MS, frame });
      return [];
    }
    return [await this.#openMessage(sender, peer, frame)];
  }

  async #keys(sender, peer, frame, now) {
    let publicKey;
    try {
      publicKey = await open(this.#announceKey, frame.announceIv, frame.announce, announceAad(this.#room, sender));
    } catch {
      if (peer.problem) return [];
      peer.problem = true;
      // Announce once more, so that a member behind the same man in the middle sees this
      // member's key arrive changed too, and says so.
      await this.#flush(true);
      return [{ type: "key-problem", member: sender, why: "unauthenticated" }];
    }
    if (peer.public === null) {
      const theirs = await subtle().importKey("raw", publicKey, { name: "X25519" }, true, []);
      const shared = new Uint8Array(
        await subtle().deriveBits({ name: "X25519", public: theirs }, this.#private, 256),
      );
      peer.public = publicKey;
      peer.pair = await aesKey(await pairKey(shared, this.#room, this.me, this.publicKey, sender, publicKey));
      shared.fill(0);
      this.#owed.add(sender);
    } else if (!equalBytes(publicKey, peer.public)) {
      peer.problem = true;
      return [{ type: "key-problem", member: sender, why: "changed" }];
    }
    const out = [];
    for (const entry of frame.entries) {
      if (entry.recipient !== this.me) continue;
      let plain;
      try {
        plain = await open(peer.pair, entry.iv, entry.sealed, senderKeyAad(this.#room, sender, this.me));
      } catch {
        out.push({ type: "key-problem", member: sender, why: "unauthenticated" });
        continue;
      }
      const chain = readU32(plain, 0);
      if (peer.chain === null || chain > peer.chain.chain) {
        peer.chain = { chain, iteration: readU32(plain, 4), key: plain.slice(8) };
      }
      plain.fill(0);
    }
    return out.concat(await this.#retry(sender, peer));
  }

  async #retry(sender, peer) {
    const waiting = peer.waiting;
    peer.waiting = [];
    const out = [];
    for (const item of waiting) {
      const { frame } = item;
      const chain = peer.chain;
      if (chain !== null && frame.chain === chain.chain && frame.iteration >= chain.iteration) {
        out.push(await this.#openMessage(sender, peer, frame));
      } else if (
        chain !== null &&
        (frame.chain < chain.chain || (frame.chain === chain.chain && frame.iteration < chain.iteration))
      ) {
        // Sent before this member's keys reached the sender: never meant to be read here.
        out.push({ type: "unreadable", sender, why: "no-keys" });
      } else {
        peer.waiting.push(item);
      }
    }
    return out;
  }

  async #openMessage(sender, peer, frame) {
    const chain = peer.chain;
    if (frame.iteration < chain.iteration) return { type: "unreadable", sender, why: "repeated" };
    if (frame.iteration - chain.iteration > MAX_SKIP) return { type: "unreadable", sender, why: "failed" };
    let key = chain.key;
    for (let i = chain.iteration; i < frame.iteration; i++) [, key] = await step(key);
    const [messageKey, following] = await step(key);
    const [aes, iv] = await messageCipher(messageKey);
    let plaintext;
    try {
      plaintext = await open(aes, iv, frame.sealed, messageAad(this.#room, sender, frame.chain, frame.iteration));
    } catch {
      return { type: "unreadable", sender, why: "failed" };
    }
    chain.key.fill(0);
    chain.key = following;
    chain.iteration = frame.iteration + 1;
    return { type: "readable", sender, plaintext };
  }

  // The messages that waited too long for their keys.
  tick(now) {
    const out = [];
    for (const [member, peer] of this.#peers) {
      const expired = peer.waiting.filter((item) => item.deadline <= now);
      if (expired.length === 0) continue;
      peer.waiting = peer.waiting.filter((item) => item.deadline > now);
      for (const _ of expired) out.push({ type: "unreadable", sender: member, why: "no-keys" });
    }
    return out;
  }
}
