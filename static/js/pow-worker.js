// Searches for a proof-of-work nonce (docs/protocol.md §3.2) off the main thread, so the page
// stays responsive and can show progress. Started with {token, difficulty}; posts
// {type: "progress", tries} now and then and {type: "solved", nonce, tries} once.
// Cancelling is the page's job: it terminates the worker.

import { PrefixHasher, leadingZeroBits } from "./sha256.js";

const BATCH = 8192;

function solve(token, difficulty) {
  const hasher = new PrefixHasher(new TextEncoder().encode(`${token}:`));
  const digits = new Uint8Array(20);
  let nonce = 0;
  for (;;) {
    for (const end = nonce + BATCH; nonce < end; nonce++) {
      const text = String(nonce);
      for (let i = 0; i < text.length; i++) digits[i] = text.charCodeAt(i);
      const words = hasher.digest(digits.subarray(0, text.length));
      if (leadingZeroBits(words, difficulty) >= difficulty) {
        postMessage({ type: "solved", nonce: text, tries: nonce + 1 });
        return;
      }
    }
    postMessage({ type: "progress", tries: nonce });
  }
}

addEventListener("message", (event) => {
  const { token, difficulty } = event.data;
  solve(token, difficulty);
});
