// The browser session of a page: its body (role, account, CSRF token) kept in this
// module's memory only (never storage, never the URL), the header's account and
// sign-out, and the notice when the session has ended.
import { ApiError, api, problemOf } from "./api.js";
import { announce, el, focus, notice } from "./dom.js";

let cached = null;
let pending = null;

/**
 * GET /ui/session, once per page load: {csrf_token, role, page, expires_at,
 * principal_id, org_id, org_name}. Throws ApiError (401 when there is no session,
 * after showing the "session has ended" notice).
 */
export async function currentSession() {
  if (cached) return cached;
  if (!pending) {
    pending = (async () => {
      let response;
      try {
        response = await fetch("/ui/session", {
          credentials: "same-origin",
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
      } catch {
        throw new ApiError(0, { title: "The service could not be reached" });
      }
      if (!response.ok) {
        const error = await problemOf(response);
        if (error.status === 401) sessionEnded();
        throw error;
      }
      cached = await response.json();
      return cached;
    })().finally(() => {
      pending = null;
    });
  }
  return pending;
}

/** Forget the session (after sign-out, or when the service said it ended). */
export function forgetSession() {
  cached = null;
}

/**
 * The header: #account names the organization and the account, #sign-out signs out.
 * Returns the session (see currentSession).
 */
export async function mountChrome() {
  const session = await currentSession();
  const account = document.getElementById("account");
  if (account) {
    account.replaceChildren(
      el("span", { class: "visually-hidden" }, "Signed in as "),
      el("strong", {}, session.principal_id),
      ` · ${session.org_name || session.org_id} · ${session.role}`,
    );
  }
  const button = document.getElementById("sign-out");
  if (button && !button.dataset.wired) {
    button.dataset.wired = "1";
    button.hidden = false;
    button.addEventListener("click", signOut);
  }
  return session;
}

async function signOut() {
  const button = document.getElementById("sign-out");
  if (button) button.disabled = true;
  try {
    await api("DELETE", "/v1/me/token");
  } catch (error) {
    if (error.status !== 401) {
      if (button) button.disabled = false;
      announce(`Signing out failed: ${error.message}`);
      return;
    }
  }
  endPage(
    "success",
    "You have signed out",
    "To come back, open the page again from your application.",
  );
  document.documentElement.dataset.session = "signed-out";
}

/**
 * The session has ended (expired, signed out elsewhere, revoked by an administrator):
 * what the page showed goes (it may have held codes), and a notice says what to do.
 * Safe to call more than once.
 */
export function sessionEnded() {
  // Once: after a sign-out (or an earlier end) the page already says what to do.
  if (document.documentElement.dataset.session) return;
  endPage(
    "warning",
    "Your session has ended",
    "Open the page again from your application; it will sign you in with a new link.",
  );
  document.documentElement.dataset.session = "ended";
}

function endPage(kind, title, text) {
  forgetSession();
  const account = document.getElementById("account");
  if (account) account.replaceChildren();
  const button = document.getElementById("sign-out");
  if (button) button.hidden = true;
  const main = document.getElementById("main") || document.body;
  const heading = main.querySelector("h1");
  // Everything but the title leaves the page and memory.
  for (const child of [...main.children]) {
    if (child !== heading) child.remove();
  }
  const box = notice(kind, title, text);
  main.append(box);
  announce(`${title}. ${text}`);
  focus(box);
}
