// Talking to corral: the management API (/api/v1) and the gateway (/v1),
// signed in by the session cookie the server set at sign-in. Every request
// carries X-Corral-CSRF, which the server demands of cookie-signed requests
// that change something (another site's page cannot add it).

export const CSRF = { "X-Corral-CSRF": "1" };

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Turn any failed response into an ApiError with a sentence for people. A
 * 401 means the session is over (unless `keepSession`: a wrong current
 * password is a 401 too) and sends the page back to sign-in.
 */
export async function failure(response, { keepSession = false } = {}) {
  let message = "";
  let code = "";
  try {
    const body = await response.json();
    message = body?.error?.message || "";
    code = body?.error?.code || "";
  } catch {
    // not JSON: say what we know
  }
  if (!message) message = `The server answered ${response.status} ${response.statusText}.`;
  message = message.charAt(0).toUpperCase() + message.slice(1);
  if (!/[.!?]$/.test(message)) message += ".";
  if (response.status === 401 && !keepSession) {
    window.dispatchEvent(new CustomEvent("corral:signed-out"));
  }
  return new ApiError(response.status, message, code);
}

export async function send(method, path, body, { signal, keepSession } = {}) {
  const headers = { ...CSRF, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "The server did not answer; check that corral is running and try again.");
  }
  if (!response.ok) throw await failure(response, { keepSession });
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, opts) => send("GET", path, undefined, opts);
export const post = (path, body, opts) => send("POST", path, body ?? {}, opts);
export const patch = (path, body) => send("PATCH", path, body);
export const del = (path) => send("DELETE", path);

/**
 * Call `fn` now and again `ms` after each run ends, while the page is
 * visible, until `stop()`; `onError` gets each failure (the loop goes on).
 */
export function poll(fn, ms, onError) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
        onError?.(null);
      } catch (e) {
        onError?.(e);
      }
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  const visible = () => {
    if (!document.hidden && timer !== null) {
      clearTimeout(timer);
      run();
    }
  };
  document.addEventListener("visibilitychange", visible);
  run();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener("visibilitychange", visible);
  };
}
