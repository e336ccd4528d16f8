// A small SHA-256 (FIPS 180-4) for the proof-of-work search. crypto.subtle.digest is the
// right tool for one hash, but it is asynchronous and costs a promise per call; the search
// makes hundreds of thousands of calls, and hashing the fixed prefix of every attempt once
// (a "midstate") saves most of the work. tests/browser checks this against crypto.subtle.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const INITIAL_STATE = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const schedule = new Uint32Array(64);

// Folds the 64-byte block at bytes[offset..] into state (a Uint32Array of 8 words).
function compress(state, bytes, offset) {
  const w = schedule;
  for (let i = 0; i < 16; i++) {
    const j = offset + i * 4;
    w[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
  }
  for (let i = 16; i < 64; i++) {
    const a = w[i - 15];
    const b = w[i - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
  }
  let a = state[0], b = state[1], c = state[2], d = state[3];
  let e = state[4], f = state[5], g = state[6], h = state[7];
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g; g = f; f = e; e = (d + t1) | 0;
    d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  state[0] = (state[0] + a) | 0; state[1] = (state[1] + b) | 0;
  state[2] = (state[2] + c) | 0; state[3] = (state[3] + d) | 0;
  state[4] = (state[4] + e) | 0; state[5] = (state[5] + f) | 0;
  state[6] = (state[6] + g) | 0; state[7] = (state[7] + h) | 0;
}

// Hashes prefix + suffix for many suffixes, compressing the whole 64-byte blocks of the
// prefix only once. digest(suffix) returns the state words (big-endian digest words).
export class PrefixHasher {
  constructor(prefix) {
    const whole = prefix.length - (prefix.length % 64);
    this.midstate = Uint32Array.from(INITIAL_STATE);
    for (let off = 0; off < whole; off += 64) compress(this.midstate, prefix, off);
    this.prefixLength = prefix.length;
    this.tail = prefix.slice(whole);
    this.buffer = new Uint8Array(192);
    this.state = new Uint32Array(8);
  }

  digest(suffix) {
    const buf = this.buffer;
    const tailLen = this.tail.length;
    const used = tailLen + suffix.length;
    // The message, a 0x80 byte and the 8-byte bit length, rounded up to whole blocks.
    const blocks = Math.ceil((used + 9) / 64);
    if (blocks * 64 > buf.length) throw new RangeError("suffix too long");
    buf.set(this.tail, 0);
    buf.set(suffix, tailLen);
    buf[used] = 0x80;
    buf.fill(0, used + 1, blocks * 64);
    const bitLength = (this.prefixLength + suffix.length) * 8;
    const end = blocks * 64;
    buf[end - 5] = Math.floor(bitLength / 2 ** 32) & 0xff;
    buf[end - 4] = (bitLength >>> 24) & 0xff;
    buf[end - 3] = (bitLength >>> 16) & 0xff;
    buf[end - 2] = (bitLength >>> 8) & 0xff;
    buf[end - 1] = bitLength & 0xff;
    const state = this.state;
    state.set(this.midstate);
    for (let b = 0; b < blocks; b++) compress(state, buf, b * 64);
    return state;
  }
}

export function wordsToBytes(words) {
  const out = new Uint8Array(words.length * 4);
  words.forEach((w, i) => {
    out[i * 4] = w >>> 24;
    out[i * 4 + 1] = (w >>> 16) & 0xff;
    out[i * 4 + 2] = (w >>> 8) & 0xff;
    out[i * 4 + 3] = w & 0xff;
  });
  return out;
}

export function sha256(bytes) {
  return wordsToBytes(new PrefixHasher(bytes).digest(new Uint8Array(0)));
}

// Counts the zero bits at the start of a digest given as state words, stopping at limit.
export function leadingZeroBits(words, limit) {
  let count = 0;
  for (const word of words) {
    if (count >= limit) break;
    if (word === 0) {
      count += 32;
      continue;
    }
    return count + Math.clz32(word);
  }
  return count;
}
