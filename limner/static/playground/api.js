// Talking to this server: tokens in local storage, JSON calls, server-sent events, errors in words.

const root = document.querySelector('meta[name="limner-root"]')?.content ?? "";

/** An absolute path on this server (behind a proxy prefix too). */
export const path = (p) => root + p;
/** The base URL the code samples name. */
export const baseUrl = () => location.origin + root;

const KEYS = { api: "limner.token", admin: "limner.adminToken" };

export function getToken(kind = "api") {
  try { return localStorage.getItem(KEYS[kind]) || ""; } catch { return ""; }
}

export function setToken(kind, value) {
  try {
    if (value) localStorage.setItem(KEYS[kind], value); else localStorage.removeItem(KEYS[kind]);
  } catch { /* storage disabled: the token lives until the page closes */ }
}

export function authHeaders(kind = "api") {
  const token = getToken(kind);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The error of a failed response, from whichever dialect's envelope it came in. */
export async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = body?.error;
  const message = (typeof error === "string" ? error : error?.message) || body?.detail || response.statusText || "no details";
  const code = (typeof error === "object" && error?.code) || body?.code || null;
  return new ApiError(response.status, code, String(message), response.headers.get("Retry-After"));
}

/** What went wrong, in words a person can act on. */
export function explain(error) {
  if (error?.name === "AbortError") return "Cancelled.";
  if (!(error instanceof ApiError)) return `Could not reach the server: ${error?.message || error}.`;
  const said = error.message.replace(/\.?$/, ".");
  if (!error.status) return `The request failed: ${said}`;
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : " Try again shortly.";
  switch (error.status) {
    case 401:
      return `The server did not accept your token (401): ${said} Open "Token" at the top and enter a valid API token.`;
    case 402:
      return `Not enough credits (402): ${said} Ask an administrator to grant credits.`;
    case 403:
      return `Not allowed (403): ${said}`;
    case 429:
      if (error.code === "insufficient_quota" || error.code === "insufficient_credits")
        return `Out of credits (429): ${said} Ask an administrator to grant credits.`;
      return `Too many requests (429): ${said}${wait}`;
    case 503:
      return `The server cannot serve this now (503): ${said}`;
    default:
      return `The server answered ${error.status}: ${said}`;
  }
}

/** GET or send JSON; resolves to the parsed body or throws an ApiError. */
export async function call(method, p, { body, kind = "api", headers = {}, signal } = {}) {
  const init = { method, headers: { ...authHeaders(kind), ...headers }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path(p), init);
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

/** Server-sent events of a streaming response, as {event, data} with data parsed from JSON. */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

/** A request id the client chooses, so it can ask /v1/jobs about the request while it runs. */
export function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return "pg_" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function base64ToBlob(b64, type) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return new Blob([bytes], { type });
}
