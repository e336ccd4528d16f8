// The room page. Reads the link's fragment once, keeps the key only in this tab's memory,
// and wires the connection (channel.js) to the screen: members, messages, compose, copy
// link, time left, fingerprint, purge, and one clear screen for each way a visit ends.

import { getLimits } from "./api.js";
import { RoomChannel } from "./channel.js";
import { decrypt, encrypt, fingerprint, importRoomKey, largestBucket, pad } from "./crypto.js";
import { b64uEncode } from "./encoding.js";
import { describeCountdown, formatClock, formatCountdown, formatNumber } from "./format.js";
import { buildLink, parseFragment, roomFromPath } from "./link.js";
import { SID_BYTES, decodeMessage, decodeText, encodeMessage, encodeText } from "./message.js";
import { KeyRing, MESSAGE_OVERHEAD, VERSION, announceCryptoKey } from "./senderkeys.js";
import { shownNodes } from "./text.js";

const $ = (id) => document.getElementById(id);
const screens = { connecting: $("connecting"), room: $("room"), ended: $("ended") };
const log = $("log");
const messageList = $("messages");
const memberList = $("members");
const compose = $("compose");
const sendButton = $("send");
const composeCount = $("compose-count");
const purgeButton = $("purge");
const purgeDialog = $("purge-dialog");
const copyStatus = $("copy-status");
const linkBox = $("link-box");
const linkField = $("link-field");
const timeLeft = $("time-left");
const timeLeftWords = $("time-left-words");

// How each visit can end. "final" endings forget the key: there is nothing left to rejoin.
const ENDINGS = {
  expired: {
    title: "This room has expired",
    text: "Its time ran out, so the relay dropped it along with everything that passed through it.",
    final: true,
  },
  purged: {
    title: "This room was purged",
    text: "Its creator ended it for everyone. Nothing that was said in it is kept anywhere.",
    final: true,
  },
  gone: {
    title: "No such room",
    text:
      "There is no room at this link. It may have ended already: a room ends when its last " +
      "person leaves, when its time runs out, or when its creator purges it.",
    final: true,
  },
  full: {
    title: "This room is full",
    text: "It already holds as many people as its creator allowed.",
    extra: "You can try again when someone leaves.",
    rejoin: "Try again",
  },
  "wrong-link": {
    title: "This link does not work",
    text:
      "The link is incomplete or has been changed. Ask the person who shared it to send it " +
      "again, and open it whole.",
    extra:
      "If you reloaded the page: the room's key lives only in this tab's memory and a reload " +
      "forgets it, on purpose. Open the original link again.",
    final: true,
  },
  lost: {
    title: "Connection lost",
    text:
      "You are no longer connected to the room. It may still be going on, but messages sent " +
      "while you are away will not reach you.",
    rejoin: "Join again",
  },
  insecure: {
    title: "This page needs a secure connection",
    text:
      "Browsers only allow encryption on pages served over HTTPS. Open the link with https:// " +
      "instead.",
    final: true,
  },
};

// Everything the tab knows about the room lives here, in memory, and nowhere else.
const state = {
  room: roomFromPath(location.pathname),
  secret: null,
  keyText: null,
  key: null,
  limits: null,
  clockOffset: 0,
  channel: null,
  me: null,
  creator: false,
  capacity: 0,
  expires: 0,
  members: new Map(),
  names: new Map(),
  announceKey: null,
  ring: null,
  // Every use of the key ring (frames in, joins and leaves, messages out) runs on this one
  // chain, in order: Web Crypto is asynchronous, and keys must go out before what they open.
  keys: Promise.resolve(),
  oldClients: new Set(),
  answer: 0,
  joinedBefore: false,
  ticker: 0,
};

function show(name) {
  for (const [key, el] of Object.entries(screens)) el.hidden = key !== name;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Appends to the log, keeping it scrolled to the end unless the reader has scrolled up.
// An element showing text that others chose (names, messages, the relay's codes): controls
// and format characters appear as escapes (text.js), never raw.
function shown(tag, className, text) {
  const node = el(tag, className);
  node.append(...shownNodes(text));
  return node;
}

function appendToLog(item) {
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  messageList.append(item);
  if (atEnd) log.scrollTop = log.scrollHeight;
}

function notice(text) {
  appendToLog(shown("li", "notice", text));
}

function nameOf(memberId) {
  return state.names.get(memberId) ?? `Member ${memberId}`;
}

function showMessage({ sender, ts, text, mine = false, failed = false, why = null, delivery = null }) {
  const item = el("li", `message${mine ? " mine" : ""}${failed ? " undecryptable" : ""}`);
  const meta = el("p", "meta");
  meta.append(shown("span", "sender", mine ? `${sender} (you)` : sender));
  meta.append(" ");
  const time = el("time", "sent", formatClock(ts));
  time.dateTime = new Date(ts).toISOString();
  meta.append(time);
  item.append(meta, shown("p", "text", failed ? (why ?? "could not be decrypted") : text));
  if (delivery !== null) {
    item.classList.add(delivery.state);
    item.append(el("p", "delivery", delivery.text));
  }
  appendToLog(item);
}

function showMembers() {
  const items = [...state.members].map(([id, name]) => {
    const item = shown("li", "member", name);
    if (id === state.me.id) item.append(" ", el("span", "tag", "you"));
    // The first member to join is the creator, and member ids start at 1 (docs/protocol.md
    // §5.3); the welcome only tells each member whether they themselves are the creator.
    const creator = state.creator ? id === state.me.id : id === 1;
    if (creator) item.append(" ", el("span", "tag", "creator"));
    return item;
  });
  memberList.replaceChildren(...items);
  $("member-count").textContent = `(${state.members.size} of ${state.capacity})`;
}

// Nine words in three rows of three, for reading aloud; the list's name is the nine words in
// order, so a screen reader says them at once.
function showFingerprint(words) {
  const list = $("fingerprint");
  list.replaceChildren(...words.map((w) => el("li", "", w)));
  list.setAttribute("aria-label", words.join(" "));
}

function tick() {
  const left = state.expires - (Date.now() + state.clockOffset);
  timeLeft.textContent = formatCountdown(left);
  timeLeftWords.textContent = describeCountdown(left);
}

// --- Compose ----------------------------------------------------------------------------

// The largest plaintext this relay lets through, and how much of it the text would use.
function measure(text) {
  const budget = largestBucket(state.limits.maxMessageBytes, MESSAGE_OVERHEAD);
  const ts = Date.now();
  const base = encodeText({ ts, text: "" }).length;
  const used = encodeText({ ts, text }).length;
  return { used: used - base, limit: Math.max(0, budget - base), fits: used <= budget };
}

function updateCount() {
  const { used, limit, fits } = measure(compose.value);
  const count = `${formatNumber(used)} of ${formatNumber(limit)} bytes`;
  if (limit === 0) {
    composeCount.textContent =
      "This relay's message size limit is too small for encrypted messages.";
  } else {
    composeCount.textContent = fits ? count : `Too long: ${count}`;
  }
  composeCount.classList.toggle("over", !fits);
  compose.setAttribute("aria-invalid", String(!fits));
  sendButton.disabled = !fits;
}

// Who a message reaches, said with it: nobody (alone in the room), some (keys still on
// their way to others), or everyone present (said by nothing).
function deliveryOf(reached, present) {
  const waiting = [...present].filter((id) => !reached.has(id));
  if (present.size === 0) {
    return {
      state: "not-delivered",
      text:
        "Not delivered: nobody else is here yet. There is no history: whoever joins later " +
        "will not see it.",
    };
  }
  if (waiting.length > 0) {
    const names = waiting.map(nameOf).join(", ");
    return {
      state: "partly-delivered",
      text:
        `Not read by ${names}: their keys were still on the way. ` +
        `Read by ${reached.size} of ${present.size}.`,
    };
  }
  return null;
}

// How long a message waits for the keys of members who have just joined (or whom this tab
// has just joined), so that a message sent right after a join reaches them.
const KEY_WAIT_MS = 2000;

async function settle(ring) {
  const deadline = performance.now() + KEY_WAIT_MS;
  while (ring.awaiting().size > 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function sendOutbox(ring, channel) {
  while (ring.outbox.length > 0) channel.send(ring.outbox.shift());
}

function send() {
  const text = compose.value;
  if (text.trim() === "" || !measure(text).fits) return;
  const message = { text, ts: Date.now() };
  compose.value = "";
  updateCount();
  const { ring, channel } = state;
  if (ring === null) return;
  const settled = settle(ring);
  state.keys = state.keys
    .then(async () => {
      await settled;
      await ring.flush();
      sendOutbox(ring, channel);
      const reached = ring.holders();
      const present = ring.present();
      const frame = await ring.seal(pad(encodeText(message)));
      if (frame.length > state.limits.maxMessageBytes) {
        notice("That message is too long for this relay and was not sent.");
      } else if (channel.send(frame)) {
        const delivery = deliveryOf(reached, present);
        showMessage({ sender: state.me.name, ts: message.ts, text, mine: true, delivery });
      } else {
        notice("Not connected: that message was not sent.");
      }
    })
    .catch((error) => notice(`That message was not sent: ${error.message}`));
}

// --- Receiving --------------------------------------------------------------------------

const UNREADABLE = {
  failed: "could not be decrypted",
  malformed: "could not be decrypted",
  "no-keys": "could not be read: it was sent before its sender's keys reached you",
};

function keyWarning(member, why) {
  const name = nameOf(member);
  const compare = "Compare the key fingerprint with them by phone or in person.";
  return why === "changed"
    ? `Warning: ${name}'s key changed during the visit; their messages cannot be read. ${compare}`
    : `Warning: the key ${name} announced could not be authenticated (the relay or someone on ` +
        `the way may have changed it); their messages cannot be read. ${compare}`;
}

function showOutcome(outcome) {
  if (outcome.type === "key-problem") {
    notice(keyWarning(outcome.member, outcome.why));
    return;
  }
  const sender = nameOf(outcome.sender);
  if (outcome.type === "unreadable") {
    if (outcome.why === "repeated") {
      notice(`A repeated or out-of-order message from ${sender} was ignored.`);
    } else {
      showMessage({ sender, ts: Date.now(), failed: true, why: UNREADABLE[outcome.why] });
    }
    return;
  }
  let message;
  try {
    message = decodeText(outcome.plaintext);
  } catch {
    showMessage({ sender, ts: Date.now(), failed: true });
    return;
  }
  showMessage({ sender, ts: message.ts, text: message.text });
}

// A frame of protocol version 1, sealed under the link's key: another new client's notice
// for older clients (ignored), or an older client's message, which this room cannot read.
async function receiveOld(memberId, ciphertext) {
  try {
    if (decodeMessage(await decrypt(state.key, state.room, ciphertext)).upgrade) return;
  } catch {
    // Not a readable old message either: said below like any other.
  }
  if (state.oldClients.has(memberId)) return;
  state.oldClients.add(memberId);
  notice(
    `${nameOf(memberId)} uses an older client, which cannot take part in this room: they need ` +
      "a newer one.",
  );
}

// Runs work(ring) on the key ring's chain; shows what it returns, then sends what the ring
// queued (keys go out before anything sealed after them).
function onKeys(work) {
  const { ring, channel } = state;
  if (ring === null) return;
  state.keys = state.keys
    .then(async () => {
      for (const outcome of await work(ring)) showOutcome(outcome);
      sendOutbox(ring, channel);
      if (ring.owes() && state.answer === 0) state.answer = setTimeout(answerKeys, KEY_BATCH_MS);
    })
    .catch((error) => notice(`A message could not be shown: ${error.message}`));
}

// Keys frames that arrive together are answered with one frame of this tab's chain, KEY_BATCH_MS
// after the first: a join in a room of 64 then stays within the relay's rate limit.
const KEY_BATCH_MS = 25;

function answerKeys() {
  state.answer = 0;
  const { ring, channel } = state;
  if (ring === null) return;
  state.keys = state.keys
    .then(async () => {
      await ring.flush();
      sendOutbox(ring, channel);
    })
    .catch((error) => notice(`This connection's keys could not be sent: ${error.message}`));
}

// What an older client (protocol version 1) shows when this tab joins (docs/upgrading.md).
const UPGRADE_NOTICE =
  "[This room now needs a newer pugfast client, with forward secrecy: this client cannot read " +
  "what the others write, nor they what it writes. Update it, or open the link in a browser.]";

// A key ring of this connection's own: a fresh key pair, a fresh chain, announced at once.
function startKeys() {
  const ring = new KeyRing(state.room);
  const { channel } = state;
  const others = [...state.members.keys()].filter((id) => id !== state.me.id);
  state.ring = ring;
  state.keys = state.keys
    .then(async () => {
      const sid = b64uEncode(crypto.getRandomValues(new Uint8Array(SID_BYTES)));
      const old = { text: UPGRADE_NOTICE, ts: Date.now(), sid, n: 1, upgrade: VERSION };
      channel.send(await encrypt(state.key, state.room, encodeMessage(old)));
      await ring.init(state.announceKey);
      await ring.start(state.me.id, others);
      sendOutbox(ring, channel);
    })
    .catch((error) => notice(`This connection's keys could not be made: ${error.message}`));
}

function tickKeys() {
  const { ring } = state;
  if (ring === null) return;
  for (const outcome of ring.tick(performance.now())) showOutcome(outcome);
}

const handler = {
  welcome(msg) {
    state.me = msg.you;
    state.creator = msg.creator === true;
    state.capacity = msg.capacity;
    state.expires = msg.expires;
    state.members = new Map(msg.members.map((m) => [m.id, m.name]));
    for (const [id, name] of state.members) state.names.set(id, name);
    purgeButton.hidden = !state.creator;
    showMembers();
    tick();
    show("room");
    document.title = "Room: pugfast";
    notice(`${state.joinedBefore ? "You joined again" : "You joined"} as ${state.me.name}.`);
    state.joinedBefore = true;
    startKeys();
    updateCount();
    compose.focus();
  },
  join(member) {
    state.members.set(member.id, member.name);
    state.names.set(member.id, member.name);
    onKeys(async (ring) => {
      ring.onJoin(member.id);
      return [];
    });
    showMembers();
    notice(`${member.name} joined.`);
  },
  leave(member) {
    state.members.delete(member.id);
    // A new chain of this tab's own, which the one who left does not get.
    onKeys(async (ring) => {
      await ring.onLeave(member.id);
      return [];
    });
    showMembers();
    notice(`${member.name} left.`);
  },
  ciphertext(memberId, bytes) {
    const copy = bytes.slice();
    if (copy[0] !== VERSION) {
      onKeys(async () => {
        await receiveOld(memberId, copy);
        return [];
      });
      return;
    }
    onKeys((ring) => ring.onFrame(memberId, copy, performance.now()));
  },
  error(code) {
    if (code === "rate_limited") {
      notice("You are sending faster than the relay allows; some messages were not delivered.");
    } else if (code === "not_creator") {
      notice("Only the room's creator can purge it.");
    } else {
      notice(`The relay reported an error (${code}).`);
    }
  },
  end(ending) {
    showEnding(ending);
  },
};

// --- Endings ----------------------------------------------------------------------------

function forget() {
  state.key = null;
  state.announceKey = null;
  state.keyText = null;
  state.secret = null;
  messageList.replaceChildren();
  memberList.replaceChildren();
  linkField.value = "";
}

function showEnding(name) {
  const ending = ENDINGS[name];
  if (purgeDialog.open) purgeDialog.close();
  clearInterval(state.ticker);
  // This connection's key pair and chains go with it: nothing of them is kept.
  state.ring = null;
  if (ending.final) forget();
  screens.ended.dataset.ending = name;
  $("ended-title").textContent = ending.title;
  $("ended-text").textContent = ending.text;
  $("ended-extra").textContent = ending.extra ?? "";
  const rejoin = $("rejoin");
  rejoin.hidden = !ending.rejoin;
  rejoin.textContent = ending.rejoin ?? "";
  document.title = `${ending.title}: pugfast`;
  show("ended");
  $("ended-title").focus();
}

// --- Joining ----------------------------------------------------------------------------

function join() {
  state.ticker = setInterval(() => {
    tick();
    tickKeys();
  }, 1000);
  state.channel = new RoomChannel(state.room, state.secret, handler);
  state.channel.connect();
}

async function copyLink() {
  const link = buildLink(location.origin, state.room, state.keyText, state.secret);
  try {
    await navigator.clipboard.writeText(link);
    copyStatus.textContent = "Link copied. Anyone who has it can join and read this room.";
  } catch {
    linkField.value = link;
    linkBox.hidden = false;
    linkField.focus();
    linkField.select();
    copyStatus.textContent = "Copy the link from the box below (Ctrl+C, or ⌘C on a Mac).";
  }
}

function wireControls() {
  compose.addEventListener("input", updateCount);
  compose.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  sendButton.addEventListener("click", () => {
    send();
    compose.focus();
  });
  $("copy-link").addEventListener("click", copyLink);
  purgeButton.addEventListener("click", () => purgeDialog.showModal());
  $("purge-cancel").addEventListener("click", () => purgeDialog.close());
  $("purge-confirm").addEventListener("click", () => {
    purgeDialog.close();
    state.channel.purge();
  });
  purgeDialog.addEventListener("close", () => {
    if (!screens.room.hidden) purgeButton.focus();
  });
  $("rejoin").addEventListener("click", connect);
  // Leaving the page leaves the room. If the browser keeps the page in its back/forward
  // cache and shows it again, the connection is gone: say so, and offer to join again.
  addEventListener("pagehide", () => state.channel?.close());
  addEventListener("pageshow", (event) => {
    if (event.persisted && state.key !== null) showEnding("lost");
  });
}

async function loadLimits() {
  const limits = await getLimits();
  if (limits.serverTime !== null) {
    // The relay states expiry by its own clock; its Date header tells, to the second, how
    // far this device's clock is from it.
    const offset = limits.serverTime - Date.now();
    state.clockOffset = Math.abs(offset) > 2000 ? offset : 0;
  }
  state.limits = limits;
}

async function connect() {
  show("connecting");
  if (state.limits === null) {
    try {
      await loadLimits();
    } catch {
      showEnding("lost");
      return;
    }
  }
  join();
}

async function start() {
  // The fragment is read exactly once, then removed from the address bar and history, so it
  // does not linger where a screenshot or a shoulder could catch it.
  const link = parseFragment(location.hash);
  history.replaceState(null, "", location.pathname);
  if (state.room === null || link === null) {
    showEnding("wrong-link");
    return;
  }
  if (!window.isSecureContext || !crypto.subtle) {
    showEnding("insecure");
    return;
  }
  state.secret = link.secret;
  state.keyText = link.keyText;
  const [key, announceKey, words] = await Promise.all([
    importRoomKey(link.key),
    announceCryptoKey(link.key, state.room),
    fingerprint(link.key, state.room),
  ]);
  link.key.fill(0);
  state.key = key;
  state.announceKey = announceKey;
  showFingerprint(words);
  wireControls();
  connect();
}

start();
