// The pages' one way to call the service: same origin, the session cookie, the
// page's CSRF token on every call, problems as ApiError.
import { currentSession, sessionEnded } from "./session.js";

/** A refused or failed call: `status` (0 when the service could not be reached),
 * `problem` (the problem+json body: type, title, detail, field), `retryAfter`
 * (seconds, or null). */
export class ApiError extends Error {
  constructor(status, problem, retryAfter = null) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || {};
    this.retryAfter = retryAfter;
  }

  /** The problem's slug: "/problems/invalid-totp" → "invalid-totp". */
  get slug() {
    return String(this.problem.type || "").split("/").pop();
  }
}

const TIMEOUT_MS = 30000;

/**
 * api("POST", "/v1/me/backup-codes/regenerations", {body: {totp}}) → the parsed JSON
 * (null for 204). With `accept` other than JSON (e.g. "application/pdf") the Response
 * itself. Throws ApiError; a 401 also shows the "session has ended" notice.
 */
export async function api(method, path, { body, accept } = {}) {
  const session = await currentSession();
  const headers = {
    Accept: accept || "application/json",
    "X-CSRF-Token": session.csrf_token,
  };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  init.signal = AbortSignal.timeout(TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, {
      title: "The service could not be reached",
      detail: "Check your connection and try again.",
    });
  }
  if (!response.ok) {
    const error = await problemOf(response);
    if (error.status === 401) sessionEnded();
    throw error;
  }
  const wantsJson = !accept || /json/.test(accept);
  if (!wantsJson) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** An ApiError from a non-2xx Response (also used by session.js). */
export async function problemOf(response) {
  let problem = { title: response.statusText || `HTTP ${response.status}` };
  const type = response.headers.get("Content-Type") || "";
  if (/json/.test(type)) {
    try {
      problem = await response.json();
    } catch {
      // A body that is not JSON after all: keep the status line.
    }
  }
  const header = response.headers.get("Retry-After");
  const seconds = header === null ? NaN : Number.parseInt(header, 10);
  return new ApiError(response.status, problem, Number.isFinite(seconds) ? seconds : null);
}
