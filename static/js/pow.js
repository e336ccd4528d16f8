// Runs the proof-of-work search in a Web Worker and turns it into a cancellable promise.

export class PowCancelled extends Error {
  constructor() {
    super("proof of work cancelled");
    this.name = "PowCancelled";
  }
}

// Resolves with the nonce (a decimal string) that solves the challenge. onProgress receives
// the number of attempts so far. Aborting signal terminates the worker at once and rejects
// with PowCancelled.
export function solveChallenge({ token, difficulty }, { onProgress = () => {}, signal } = {}) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new PowCancelled());
      return;
    }
    const worker = new Worker("/static/js/pow-worker.js", { type: "module", name: "pow" });
    const finish = () => {
      worker.terminate();
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      finish();
      reject(new PowCancelled());
    };
    signal?.addEventListener("abort", onAbort);
    worker.addEventListener("message", (event) => {
      const data = event.data;
      if (data.type === "progress") {
        onProgress(data.tries);
      } else if (data.type === "solved") {
        finish();
        onProgress(data.tries);
        resolve(data.nonce);
      }
    });
    worker.addEventListener("error", (event) => {
      finish();
      reject(new Error(`proof-of-work worker failed: ${event.message || "could not start"}`));
    });
    worker.postMessage({ token, difficulty });
  });
}

// The chance that a search of `tries` attempts has found a nonce by now: each attempt
// succeeds with probability 2^-difficulty, so the search has no fixed length; this is the
// one progress measure that is true at every moment.
export function chanceSolved(tries, difficulty) {
  return 1 - Math.exp(-tries / 2 ** difficulty);
}
