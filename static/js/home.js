// The home page: choose a lifetime and a size, prove work, make a key, create the room and
// open it. The key is made here and handed to the room page only through the link's
// fragment.

import { ApiError, createRoom, getLimits, newChallenge } from "./api.js";
import { generateKeyBytes } from "./crypto.js";
import { b64uEncode } from "./encoding.js";
import { formatDuration, formatNumber } from "./format.js";
import { buildLink } from "./link.js";
import { PowCancelled, chanceSolved, solveChallenge } from "./pow.js";

// Lifetimes offered besides the relay's own minimum, default and maximum.
const TTL_PRESETS = [300, 900, 3600, 4 * 3600, 86400, 7 * 86400];

const $ = (id) => document.getElementById(id);
const ttlSelect = $("ttl");
const capacityInput = $("capacity");
const capacityHint = $("capacity-hint");
const createButton = $("create");
const working = $("working");
const workProgress = $("work-progress");
const workDetail = $("work-detail");
const cancelButton = $("cancel");
const statusLine = $("create-status");
const errorBox = $("create-error");

let limits = null;
let cancel = null;

const ERROR_TEXT = {
  network: "The relay could not be reached. Check your connection and try again.",
  rate_limited: "Too many rooms were created from here just now. Wait a minute and try again.",
  at_capacity: "The relay is at capacity right now. Try again in a while.",
  challenge_expired: "The anti-spam check took too long and expired. Try again.",
  challenge_used: "The anti-spam check was already used. Try again.",
  bad_proof: "The relay did not accept the anti-spam check. Try again.",
};

function describeError(error) {
  if (error instanceof ApiError) {
    return ERROR_TEXT[error.code] ?? `The relay refused to create the room (${error.code}).`;
  }
  return `Something went wrong: ${error.message}`;
}

function showError(text, retry) {
  errorBox.replaceChildren();
  const p = document.createElement("p");
  p.textContent = text;
  errorBox.append(p);
  if (retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Try again";
    button.addEventListener("click", retry);
    errorBox.append(button);
  }
}

function clearMessages() {
  errorBox.replaceChildren();
  statusLine.textContent = "";
}

function ttlChoices({ min, max, default: fallback }) {
  const all = new Set([min, fallback, max, ...TTL_PRESETS]);
  return [...all].filter((s) => s >= min && s <= max).sort((a, b) => a - b);
}

function showLimits() {
  ttlSelect.replaceChildren(
    ...ttlChoices(limits.ttl).map((seconds) => {
      const option = document.createElement("option");
      option.value = String(seconds);
      option.textContent = formatDuration(seconds);
      option.selected = seconds === limits.ttl.default;
      return option;
    }),
  );
  const { min, max, default: fallback } = limits.capacity;
  capacityInput.min = String(min);
  capacityInput.max = String(max);
  capacityInput.value = String(fallback);
  capacityHint.textContent = `Between ${formatNumber(min)} and ${formatNumber(max)}, you included.`;
  ttlSelect.disabled = false;
  capacityInput.disabled = false;
  createButton.disabled = false;
}

async function loadLimits() {
  clearMessages();
  try {
    limits = await getLimits();
  } catch (error) {
    capacityHint.textContent = "";
    showError(describeError(error), loadLimits);
    return;
  }
  showLimits();
}

// The chosen capacity, or null (with the field marked invalid) when it is out of range.
function chosenCapacity() {
  const { min, max } = limits.capacity;
  const value = Number(capacityInput.value);
  const ok =
    capacityInput.value.trim() !== "" && Number.isInteger(value) && value >= min && value <= max;
  capacityInput.setAttribute("aria-invalid", String(!ok));
  return ok ? value : null;
}

function setWorking(on) {
  working.hidden = !on;
  createButton.disabled = on;
  ttlSelect.disabled = on;
  capacityInput.disabled = on;
  cancelButton.disabled = !on;
  if (on) {
    workProgress.value = 0;
    workDetail.textContent = "";
  }
}

function showProgress(tries, difficulty) {
  workProgress.value = chanceSolved(tries, difficulty);
  const expected = formatNumber(2 ** difficulty);
  workDetail.textContent = `${formatNumber(tries)} attempts of about ${expected} expected.`;
}

async function create() {
  clearMessages();
  const capacity = chosenCapacity();
  if (capacity === null) {
    showError(`Choose between ${limits.capacity.min} and ${limits.capacity.max} people.`);
    capacityInput.focus();
    return;
  }
  const ttl = Number(ttlSelect.value);
  const controller = new AbortController();
  cancel = controller;
  setWorking(true);
  cancelButton.focus();
  try {
    const key = await generateKeyBytes();
    const challenge = await newChallenge();
    controller.signal.throwIfAborted();
    const nonce = await solveChallenge(challenge, {
      signal: controller.signal,
      onProgress: (tries) => showProgress(tries, challenge.difficulty),
    });
    // Past this point the room is being made; cancelling would only leave it unused.
    cancelButton.disabled = true;
    const room = await createRoom({ token: challenge.token, nonce, ttl, capacity });
    statusLine.textContent = "Room created. Opening it…";
    const link = buildLink("", room.room, b64uEncode(key), room.secret);
    key.fill(0);
    location.assign(link);
  } catch (error) {
    setWorking(false);
    if (error instanceof PowCancelled || controller.signal.aborted) {
      statusLine.textContent = "Cancelled. No room was created.";
    } else {
      statusLine.textContent = "";
      showError(describeError(error), create);
    }
    createButton.focus();
  } finally {
    cancel = null;
  }
}

function start() {
  if (!window.isSecureContext || !crypto.subtle) {
    showError(
      "This page needs a secure connection (HTTPS) to encrypt. Open it with https:// instead.",
    );
    return;
  }
  createButton.addEventListener("click", create);
  cancelButton.addEventListener("click", () => cancel?.abort());
  capacityInput.addEventListener("input", () => capacityInput.removeAttribute("aria-invalid"));
  // Coming back (Back button) to a page kept in the back/forward cache: it was left
  // mid-creation, so start over.
  addEventListener("pageshow", (event) => {
    if (event.persisted) {
      setWorking(false);
      clearMessages();
    }
  });
  loadLimits();
}

start();
