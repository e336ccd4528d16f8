// The relay's HTTP API (docs/protocol.md §2). Every failure becomes an ApiError carrying the
// server's error code, so the pages can say what went wrong in words.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, body) {
  const init = { method, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "The relay could not be reached.");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A proxy's HTML error page, say; handled below as a failure without details.
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? "http_error", data?.message ?? "");
  }
  if (data === null || typeof data !== "object") {
    throw new ApiError(response.status, "bad_response", "The relay sent an unreadable answer.");
  }
  return { data, date: response.headers.get("Date") };
}

// {ttl: {min, max, default}, capacity: {min, max, default}, maxMessageBytes, powDifficulty},
// plus serverTime: the relay's clock (from the Date header, to the second) or null.
export async function getLimits() {
  const { data, date } = await request("GET", "/api/limits");
  const serverTime = date ? Date.parse(date) : NaN;
  return { ...data, serverTime: Number.isNaN(serverTime) ? null : serverTime };
}

export async function newChallenge() {
  return (await request("POST", "/api/challenge")).data;
}

// Resolves with {room, secret, expires, ttl, capacity}.
export async function createRoom({ token, nonce, ttl, capacity }) {
  return (await request("POST", "/api/rooms", { token, nonce, ttl, capacity })).data;
}
