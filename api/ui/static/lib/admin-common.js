// What the administrator's panels share: API calls that end the page on a 401,
// problems shown beside the control that caused them, and in-page confirmations.
// Everything the API answers is attacker-influenced text: it goes in by textContent.

import { api, ApiError } from "./api.js";
import { announce, byId, el, formatTime } from "./dom.js";

export { announce };

// api.js already shows the "session has ended" notice on a 401.
export { api as call };

// dom.js's builders under the names the panels use.
export { byId, el as h };

/** A <time> element for a timestamp, or a dash. */
export function timeCell(ts) {
  return ts ? el("time", { datetime: ts }, formatTime(ts)) : "—";
}

export function badge(text, kind) {
  return el("span", { class: `badge badge-${kind}` }, text);
}

/** The words for an error: the problem's detail, else its title, else the status. */
export function describe(err) {
  if (err instanceof ApiError) {
    const p = err.problem || {};
    let text = p.detail || p.title || `The service answered ${err.status}.`;
    if (err.status === 401) text = "Your session has ended. Open this page again from the link.";
    if (err.retryAfter) text += ` Try again in ${err.retryAfter} s.`;
    return text;
  }
  return "The service could not be reached. Check your connection and try again.";
}

/** Shows an error in `slot` (a .field-error), or, when the problem names one of
 * `fields` (problem field -> input id), beside that input, marked invalid. */
export function showProblem(slot, err, fields = {}) {
  const named = err instanceof ApiError && err.problem ? err.problem.field : null;
  const inputId = named && fields[named];
  if (inputId) {
    const input = byId(inputId);
    const beside = byId(`${inputId}-error`);
    input.setAttribute("aria-invalid", "true");
    beside.textContent = describe(err);
    beside.hidden = false;
    input.focus();
  } else {
    slot.textContent = describe(err);
    slot.hidden = false;
  }
  announce(describe(err));
}

export function clearProblems(root) {
  for (const slot of root.querySelectorAll(".field-error")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const input of root.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}

/** One field's own message (client-side checks), shown as the API's would be. */
export function fieldError(inputId, text) {
  const input = byId(inputId);
  const beside = byId(`${inputId}-error`);
  input.setAttribute("aria-invalid", "true");
  beside.textContent = text;
  beside.hidden = false;
  input.focus();
  announce(text);
}

/** A short, non-secret handle for an opaque id in a table. */
export function shortId(id) {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

/** Disables `button` while `work` runs, so a double click sends one request. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** Shows a confirmation panel and resolves true (go) or false (cancel / Escape).
 * Focus moves to the panel (it is labelled by its title) and back to `opener`. */
export function confirmIn(panel, goButton, cancelButton, opener) {
  panel.hidden = false;
  panel.focus();
  return new Promise((resolve) => {
    const finish = (answer) => {
      goButton.removeEventListener("click", onGo);
      cancelButton.removeEventListener("click", onCancel);
      panel.removeEventListener("keydown", onKey);
      if (!answer) {
        panel.hidden = true;
        if (opener && opener.isConnected) opener.focus();
      }
      resolve(answer);
    };
    const onGo = () => finish(true);
    const onCancel = () => finish(false);
    const onKey = (event) => {
      if (event.key === "Escape") finish(false);
    };
    goButton.addEventListener("click", onGo);
    cancelButton.addEventListener("click", onCancel);
    panel.addEventListener("keydown", onKey);
  });
}

/** Shows a success notice, focuses it (the eye goes there) and announces it. */
export function done(notice, text) {
  notice.textContent = text;
  notice.hidden = false;
  notice.focus();
  announce(text);
}

export function segment(value) {
  return encodeURIComponent(value);
}
