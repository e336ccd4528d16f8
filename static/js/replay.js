// Refuses ciphertexts the relay replays or reorders. The relay cannot read or forge a
// message, but it can deliver a captured one again, or attribute it to another member.
// Every sender (one per connection: a fresh sid each time a tab joins) numbers its messages
// 1, 2, 3, ... inside the ciphertext. A receiver binds each sid to the member id it first
// arrived from and accepts only increasing numbers from that member.

export class ReplayGuard {
  #senders = new Map();

  // True when the message is new; false when it repeats or precedes one already accepted
  // from this sender, or carries a sid first seen from a different member.
  accept(memberId, sid, n) {
    const seen = this.#senders.get(sid);
    if (seen === undefined) {
      this.#senders.set(sid, { memberId, n });
      return true;
    }
    if (seen.memberId !== memberId || n <= seen.n) return false;
    seen.n = n;
    return true;
  }
}
