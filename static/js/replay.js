// Refuses ciphertexts the relay replays or reorders, exactly as pugfast/client/replay.py does.
// The relay cannot read or forge a message, but it can deliver a captured one again, or
// attribute it to another member. Every sender (one per connection: a fresh sid each time a
// tab joins) numbers its messages 1, 2, 3, ... inside the ciphertext. A receiver binds each
// sid to the member id it first arrived from, binds each member id to the first sid it sent
// (a client never changes its sid during a connection), and accepts only increasing numbers.
//
// The table holds one entry per sender and at most MAX_SENDERS of them, forgetting the sender
// heard from least recently when a new one would pass the bound: a member that changes its
// sid with every message grows nothing, and a relay inventing member ids cannot pass the
// bound. The replay window is the last MAX_SENDERS senders heard from (docs/client.md).

export const MAX_SENDERS = 16384;

export class ReplayGuard {
  #senders = new Map(); // sid -> {memberId, n}, least recently heard from first
  #byMember = new Map(); // member id -> sid
  #limit;

  constructor(limit = MAX_SENDERS) {
    this.#limit = limit;
  }

  get size() {
    return this.#senders.size;
  }

  // True when the message is new; false when it repeats or precedes one already accepted
  // from this sender, carries a sid first seen from a different member, or comes from a
  // member that sent another sid before.
  accept(memberId, sid, n) {
    const seen = this.#senders.get(sid);
    if (seen === undefined) {
      if (this.#byMember.has(memberId)) return false;
      this.#senders.set(sid, { memberId, n });
      this.#byMember.set(memberId, sid);
      if (this.#senders.size > this.#limit) {
        const [oldest, { memberId: forgotten }] = this.#senders.entries().next().value;
        this.#senders.delete(oldest);
        this.#byMember.delete(forgotten);
      }
      return true;
    }
    if (seen.memberId !== memberId || n <= seen.n) return false;
    seen.n = n;
    this.#senders.delete(sid);
    this.#senders.set(sid, seen);
    return true;
  }
}
