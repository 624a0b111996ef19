// The hookd.v1.WebhookService over the Connect protocol (https://connectrpc.com/docs/protocol),
// with JSON: unary calls are a POST of the request, server streams a POST of one enveloped
// message answered by a stream of enveloped messages. The token lives in sessionStorage only and
// travels in the authorization header, never in a URL.

const SERVICE = "/hookd.v1.WebhookService/";
const TOKEN_KEY = "hookd.token";
const END_STREAM = 0x02;

/** An error answered by hookd: `code` is the Connect code (`invalid_argument`, `not_found`...). */
export class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }

  /** The request field an INVALID_ARGUMENT names (`webhook.url`), or "". */
  get field() {
    const match = this.code === "invalid_argument" && /^([a-z_.\[\]A-Za-z0-9-]+): /.exec(this.message);
    return match ? match[1] : "";
  }

  /** The message without the field's name. */
  get detail() {
    return this.field ? this.message.slice(this.field.length + 2) : this.message;
  }
}

const HTTP_CODES = { 400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
  409: "already_exists", 412: "failed_precondition", 429: "resource_exhausted", 503: "unavailable" };

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(contentType) {
  const result = { "content-type": contentType, "connect-protocol-version": "1" };
  const bearer = token();
  if (bearer) result.authorization = `Bearer ${bearer}`;
  return result;
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the HTTP status says enough
  }
  return new ApiError(body.code || HTTP_CODES[response.status] || "unknown", body.message || `HTTP ${response.status}`);
}

function unreachable(error) {
  return new ApiError("unavailable", `hookd cannot be reached (${error.message})`);
}

/** Call a unary method with a request object; resolves to the response object. */
export async function call(method, request = {}) {
  let response;
  try {
    response = await fetch(SERVICE + method, {
      method: "POST",
      headers: headers("application/json"),
      body: JSON.stringify(request),
    });
  } catch (error) {
    throw unreachable(error);
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

function envelope(message) {
  const json = new TextEncoder().encode(JSON.stringify(message));
  const framed = new Uint8Array(5 + json.length);
  new DataView(framed.buffer).setUint32(1, json.length);
  framed.set(json, 5);
  return framed;
}

/** Yield each enveloped message of a byte stream as [flags, parsed JSON]. */
async function* envelopes(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(0);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
      if (buffer.length < 5 + length) break;
      yield [buffer[0], JSON.parse(decoder.decode(buffer.subarray(5, 5 + length)))];
      buffer = buffer.subarray(5 + length);
    }
  }
}

/**
 * Open a server stream: `onMessage(response)` for each message, `onEnd(error or null)` once at the
 * end, unless it was stopped. Returns the function that stops it (cancelling the call on the server).
 */
export function stream(method, request, onMessage, onEnd) {
  const controller = new AbortController();
  (async () => {
    let response;
    try {
      response = await fetch(SERVICE + method, {
        method: "POST",
        headers: headers("application/connect+json"),
        body: envelope(request),
        signal: controller.signal,
      });
    } catch (error) {
      if (!controller.signal.aborted) onEnd(unreachable(error));
      return;
    }
    try {
      if (!response.ok) throw await errorOf(response);
      for await (const [flags, message] of envelopes(response.body)) {
        if (flags & END_STREAM) {
          if (message.error) throw new ApiError(message.error.code || "unknown", message.error.message || "");
          break;
        }
        onMessage(message);
      }
      onEnd(null);
    } catch (error) {
      if (controller.signal.aborted) return;
      onEnd(error instanceof ApiError ? error : unreachable(error));
    }
  })();
  return () => controller.abort();
}
