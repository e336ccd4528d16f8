// One connection to a room (docs/protocol.md §6), without any page logic: joins, turns the
// relay's messages into calls on a handler object, and says how the connection ended.
//
// Endings, decided from the close code, or from the {"type":"expired"|"purged"} message
// that precedes a 4410 close:
//   "expired", "purged"  the room ended (4410)
//   "gone"               no such room (4404)
//   "full"               the room is at capacity (4409)
//   "wrong-link"         the secret was refused (4403)
//   "lost"               anything else: network, server restart, timeouts, 4400, 4503, ...

const CLOSE_ENDINGS = new Map([
  [4404, "gone"],
  [4409, "full"],
  [4403, "wrong-link"],
]);

export function endingFor(code, reason) {
  if (code === 4410) return reason === "purged" ? "purged" : "expired";
  return CLOSE_ENDINGS.get(code) ?? "lost";
}

export class RoomChannel {
  // handler: {welcome(msg), join(member), leave(member), ciphertext(memberId, bytes),
  //           error(code), end(ending, {code, reason})}
  constructor(room, secret, handler) {
    this.room = room;
    this.secret = secret;
    this.handler = handler;
    this.socket = null;
    this.ended = false;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/r/${this.room}/ws`);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "join", secret: this.secret }));
    });
    socket.addEventListener("message", (event) => this.#receive(event.data));
    socket.addEventListener("close", (event) =>
      this.#finish(endingFor(event.code, event.reason), event),
    );
    this.socket = socket;
  }

  send(ciphertext) {
    if (this.ended || this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(ciphertext);
    return true;
  }

  purge() {
    if (this.ended || this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify({ type: "purge" }));
    return true;
  }

  // Leaves the room without reporting an ending (the page is going away).
  close() {
    this.ended = true;
    this.socket?.close(1000);
  }

  #receive(data) {
    if (this.ended) return;
    if (data instanceof ArrayBuffer) {
      const bytes = new Uint8Array(data);
      if (bytes.length < 5) return;
      const sender = new DataView(data).getUint32(0);
      this.handler.ciphertext(sender, bytes.subarray(4));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg?.type) {
      case "welcome":
        this.handler.welcome(msg);
        break;
      case "join":
        this.handler.join(msg.member);
        break;
      case "leave":
        this.handler.leave(msg.member);
        break;
      case "error":
        this.handler.error(msg.code);
        break;
      case "expired":
      case "purged":
        // The close (4410) follows; the room is over either way, so say so at once.
        this.#finish(msg.type, { code: 4410, reason: msg.type });
        this.socket.close(1000);
        break;
      default:
        break;
    }
  }

  #finish(ending, { code, reason }) {
    if (this.ended) return;
    this.ended = true;
    this.handler.end(ending, { code, reason });
  }
}
