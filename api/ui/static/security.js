// The user's Security tab: the authenticator app (enrollment with a QR code), the
// backup codes (summary, regeneration with a 6-digit code, the new codes once) and
// the recent security events. Everything through the /v1 API with the page's session.
import { api, ApiError } from "./lib/api.js";
import { mountChrome, sessionEnded } from "./lib/session.js";
import { announce, formatTime } from "./lib/dom.js";
import * as codes from "./lib/security-codes.js";
import { deviceLabel, eventLabel, failureMessage, outcomeLabel, untilText } from "./lib/security-text.js";

const ME = "/v1/me/mfa";
const ENROLL = "/v1/me/mfa/enrollment";
const CONFIRM = "/v1/me/mfa/enrollment/confirm";
const REGENERATIONS = "/v1/me/backup-codes/regenerations";
const EVENTS = "/v1/me/events?limit=12";
const POLL_MS = 400;
const POLLS = 750; // about five minutes, then the page says to come back later
const PENDING = new Set(["queued", "processing"]);

const $ = (id) => document.getElementById(id);
const show = (id, on = true) => {
  const node = $(id);
  if (node) node.hidden = !on;
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let status = null; // the last MfaStatus
let ended = false;
const waits = new Map(); // form id -> timer that lifts a throttle

// --- start ---------------------------------------------------------------------------

async function main() {
  // The three first reads go out together (none of them waits for another).
  const chrome = mountChrome();
  const first = api("GET", ME);
  const events = api("GET", EVENTS);
  events.catch(() => {}); // answered in loadEvents
  first.catch(() => {}); // answered below
  try {
    await chrome;
  } catch (err) {
    fatal(err);
    return;
  }
  wire();
  try {
    status = await first;
    render(status);
  } catch (err) {
    fatal(err);
    return;
  }
  await loadEvents(events);
  document.documentElement.dataset.state = "ready";
}

function wire() {
  $("enroll-start").addEventListener("click", startEnrollment);
  $("enroll-form").addEventListener("submit", confirmEnrollment);
  $("regen-open").addEventListener("click", openRegeneration);
  $("regen-cancel").addEventListener("click", closeRegeneration);
  $("regen-form").addEventListener("submit", submitRegeneration);
  $("codes-copy").addEventListener("click", async () => announce(await codes.copyCodes()));
  $("codes-download").addEventListener("click", () => announce(codes.downloadPdf()));
  $("codes-print").addEventListener("click", () => codes.printCodes());
  $("codes-done").addEventListener("click", finishCodes);
  $("sign-out").addEventListener("click", forget);
  // Leaving the page (or the back-forward cache keeping it) takes the secrets along.
  window.addEventListener("pagehide", forget);
}

// Codes, the pending secret and typed digits leave memory and the page.
function forget() {
  codes.wipe();
  forgetSecret();
  for (const id of ["enroll-totp", "regen-totp"]) {
    const input = $(id);
    if (input) input.value = "";
  }
}

function forgetSecret() {
  const qr = $("enroll-qr");
  if (qr) qr.removeAttribute("src");
  const secret = $("enroll-secret");
  if (secret) secret.textContent = "";
}

function fatal(err) {
  if (isEnded(err)) return;
  show("sec-loading", false);
  $("sec-error").textContent = "Your security settings could not be loaded. Reload the page to try again.";
  show("sec-error");
  document.documentElement.dataset.state = "error";
}

// A 401: the session is over (signed out, expired or revoked). Nothing stays on screen.
function isEnded(err) {
  if (!(err instanceof ApiError) || err.status !== 401) return false;
  if (!ended) {
    ended = true;
    forget();
    for (const id of ["mfa", "codes", "events", "sec-loading", "progress"]) show(id, false);
    sessionEnded();
    document.documentElement.dataset.state = "error";
  }
  return true;
}

// --- status --------------------------------------------------------------------------

async function refresh() {
  status = await api("GET", ME);
  render(status);
}

function render(s) {
  show("sec-loading", false);
  show("mfa");
  const badge = $("mfa-badge");
  badge.hidden = false;
  badge.textContent = s.enrolled ? "On" : "Off";
  badge.className = s.enrolled ? "badge badge-ok" : "badge badge-neutral";
  show("enrolled", s.enrolled);
  show("enroll", !s.enrolled);
  if (s.enrolled) {
    const at = $("enrolled-at");
    at.dateTime = s.enrolled_at;
    at.textContent = formatTime(s.enrolled_at);
    show("enroll-setup", false);
    forgetSecret();
  }
  renderCodes(s);
}

function renderCodes(s) {
  const section = $("codes");
  if (!section) return;
  if (!s.backup_codes_enabled) {
    // The organization turned backup codes off: no backup-code section at all.
    codes.wipe();
    section.remove();
    return;
  }
  section.hidden = !s.enrolled && !codes.hasCodes();
  const set = s.backup_codes;
  const notices = $("codes-notices");
  notices.replaceChildren();
  const badge = $("codes-badge");
  badge.hidden = !s.enrolled;
  show("codes-summary", set !== null);
  show("codes-none", s.enrolled && set === null);
  const open = $("regen-open");
  open.hidden = !s.enrolled || !$("regen").hidden || !$("progress").hidden || codes.hasCodes();
  open.textContent = set === null ? "Generate backup codes" : "Regenerate backup codes";
  if (set === null) {
    badge.textContent = "None";
    badge.className = "badge badge-warning";
    if (s.last_set_expired_unseen) {
      notices.append(notice("warning", "Your last set of codes was never shown.",
        " It expired before anyone opened it, so it was turned off. Generate a new set."));
    }
  } else {
    $("codes-set").textContent = set.set_id;
    $("codes-remaining").textContent = `${set.remaining} of ${set.total} left`;
    const meter = $("codes-meter");
    meter.className = `sec-meter-fill sec-meter-${Math.round((10 * set.remaining) / Math.max(set.total, 1))}`;
    if (set.low) meter.classList.add("sec-meter-low");
    const generated = $("codes-generated");
    generated.dateTime = set.generated_at;
    generated.textContent = formatTime(set.generated_at);
    $("codes-last-used").textContent = set.last_used_at ? formatTime(set.last_used_at) : "Never";
    $("codes-format").textContent = set.format === 12 ? "12 symbols (older format)" : `${set.format} symbols`;
    if (set.remaining === 0) {
      badge.textContent = "None left";
      badge.className = "badge badge-warning";
      notices.append(notice("warning", "You have used every backup code.",
        " Regenerate a new set so you can still sign in if you lose your phone."));
    } else if (set.low) {
      badge.textContent = "Running low";
      badge.className = "badge badge-warning";
      const word = set.remaining === 1 ? "code" : "codes";
      notices.append(notice("warning", `Running low: only ${set.remaining} backup ${word} left.`,
        " Regenerate a new set before you run out."));
    } else {
      badge.textContent = "Active";
      badge.className = "badge badge-ok";
    }
    if (set.format === 12) {
      notices.append(notice("info", "Your codes use an older, shorter format.",
        " Regenerate to get the current 16-symbol codes, which are harder to guess."));
    }
  }
  if (s.limits.backup_codes_locked) {
    notices.append(notice("danger", "Signing in with backup codes is locked",
      " after too many wrong codes in a row. A new set, or your administrator, unlocks it."));
  }
}

// A standing notice (no role=alert: it is read with the section, not shouted at load).
function notice(kind, strong, text) {
  const box = document.createElement("div");
  box.className = `notice notice-${kind}`;
  const p = document.createElement("p");
  const b = document.createElement("strong");
  b.textContent = strong;
  p.append(b, text);
  box.append(p);
  return box;
}

// --- enrollment ----------------------------------------------------------------------

async function startEnrollment() {
  const button = $("enroll-start");
  button.disabled = true;
  try {
    const started = await api("POST", ENROLL);
    const bytes = new TextEncoder().encode(started.qr_svg);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    $("enroll-qr").src = `data:image/svg+xml;base64,${btoa(binary)}`;
    $("enroll-secret").textContent = started.secret.replace(/=+$/, "").replace(/(.{4})(?=.)/g, "$1 ");
    button.hidden = true;
    show("enroll-setup");
    $("enroll-setup-title").focus();
    announce("Scan the QR code with your authenticator app, then enter the 6-digit code it shows.");
  } catch (err) {
    if (isEnded(err)) return;
    if (err instanceof ApiError && err.problem?.type === "/problems/already-enrolled") {
      await refresh();
      announce("Your authenticator app is already set up.");
      return;
    }
    fieldError("enroll", "Setup could not be started. Please try again.");
  } finally {
    button.disabled = false;
  }
}

async function confirmEnrollment(event) {
  event.preventDefault();
  const totp = digits("enroll");
  if (totp === null) return;
  busy("enroll", true);
  try {
    const confirmed = await api("POST", CONFIRM, { body: { totp } });
    $("enroll-totp").value = "";
    forgetSecret();
    await refresh();
    announce("Your authenticator app is turned on.");
    if (confirmed.regeneration) {
      await track(confirmed.regeneration, { first: true });
    } else {
      $("mfa-title").focus();
    }
  } catch (err) {
    if (isEnded(err)) return;
    const type = err instanceof ApiError ? err.problem?.type : null;
    if (type === "/problems/no-pending-enrollment") {
      show("enroll-setup", false);
      show("enroll-start");
      forgetSecret();
      fieldError("enroll", null);
      $("enroll-start").focus();
      announce("Your setup expired. Start it again.");
    } else {
      refusedCode("enroll", err);
    }
  } finally {
    busy("enroll", false);
    void loadEvents();
  }
}

// --- regeneration --------------------------------------------------------------------

function openRegeneration() {
  codes.wipe();
  show("regen");
  show("regen-open", false);
  fieldError("regen", null);
  $("regen-totp").value = "";
  applyLimits("regen");
  const input = $("regen-totp");
  if (input.disabled) {
    $("regen-error").focus();
  } else {
    input.focus();
  }
}

function closeRegeneration() {
  show("regen", false);
  fieldError("regen", null);
  $("regen-totp").value = "";
  show("regen-open");
  $("regen-open").focus();
}

async function submitRegeneration(event) {
  event.preventDefault();
  const totp = digits("regen");
  if (totp === null) return;
  busy("regen", true);
  try {
    const reg = await api("POST", REGENERATIONS, { body: { totp } });
    $("regen-totp").value = "";
    await track(reg, { first: false });
  } catch (err) {
    if (isEnded(err)) return;
    const problem = err instanceof ApiError ? err.problem : null;
    if (problem?.type === "/problems/regeneration-pending" && problem.regeneration_id) {
      $("regen-totp").value = "";
      await track({ id: problem.regeneration_id, status: "queued", links: links(problem.regeneration_id) }, { first: false });
    } else if (problem?.type === "/problems/backup-codes-disabled" || problem?.type === "/problems/mfa-not-enrolled") {
      await refresh();
      announce(problem.type.endsWith("disabled") ? "Your organization has turned backup codes off." : "Your authenticator app is not set up.");
    } else {
      refusedCode("regen", err);
    }
  } finally {
    busy("regen", false);
  }
}

function links(id) {
  const self = `${REGENERATIONS}/${encodeURIComponent(id)}`;
  return { self, sheet: `${self}/sheet` };
}

// Follows a regeneration until the worker is done, then shows its codes once.
async function track(reg, { first }) {
  show("regen", false);
  show("regen-open", false);
  show("codes");
  show("progress");
  progress(reg.status, first);
  $("progress-text").focus();
  try {
    for (let i = 0; PENDING.has(reg.status) && i < POLLS; i += 1) {
      await sleep(POLL_MS);
      reg = await api("GET", reg.links.self);
      progress(reg.status, first);
    }
    if (PENDING.has(reg.status)) {
      done("Making your codes is taking longer than usual. Reload this page in a few minutes.");
      return;
    }
    if (reg.status === "failed") {
      await failed(reg.failure, first);
      return;
    }
    if (reg.status !== "ready") {
      await refresh();
      done("These codes can no longer be shown. Regenerate a new set.");
      return;
    }
    const sheet = await api("GET", reg.links.sheet, { accept: "application/json" });
    show("progress", false);
    codes.showCodes(sheet, { first, formatTime });
    await refresh();
    $("new-codes-title").focus();
    announce(`Your ${first ? "" : "new "}backup codes are ready: ${sheet.codes.length} codes. They will not be shown again.`);
  } catch (err) {
    if (isEnded(err)) return;
    const type = err instanceof ApiError ? err.problem?.type : null;
    await refresh().catch(() => {});
    if (type === "/problems/sheet-gone") {
      done("These codes were already shown once, in another tab or window, and cannot be shown again. If you did not save them, regenerate a new set.");
    } else if (type === "/problems/sheet-expired") {
      done("These codes expired before they were shown and have been turned off. Regenerate a new set.");
    } else {
      done("Something went wrong while making your codes. Reload the page and check your backup codes.");
    }
  } finally {
    void loadEvents();
  }
}

function progress(state, first) {
  const what = first ? "your backup codes" : "your new backup codes";
  const text = state === "processing" ? `Making ${what}…` : `Checking your code…`;
  const p = $("progress-text");
  if (p.textContent !== text) {
    p.textContent = text;
    announce(text);
  }
}

// The progress ends without codes: say why where the codes would have been.
function done(text) {
  show("progress", false);
  const notices = $("codes-notices");
  notices.prepend(notice("warning", text, ""));
  show("regen-open", status?.enrolled ?? false);
  $("codes-title").focus();
  announce(text);
}

async function failed(failure, first) {
  show("progress", false);
  await refresh();
  if (first) {
    done(failureMessage(failure));
    return;
  }
  show("regen");
  show("regen-open", false);
  applyLimits("regen");
  if (!$("regen-totp").disabled) {
    fieldError("regen", failureMessage(failure));
    $("regen-totp").focus();
  } else {
    $("regen-error").focus();
  }
  announce(`Your codes were not changed. ${$("regen-error").textContent}`);
}

// --- the 6-digit field ---------------------------------------------------------------

// The typed code as 6 digits, or null after saying what is wrong with it.
function digits(form) {
  const input = $(`${form}-totp`);
  const value = input.value.replace(/\s+/g, "");
  if (/^[0-9]{6}$/.test(value)) {
    fieldError(form, null);
    return value;
  }
  fieldError(form, "Enter the 6 digits your authenticator app shows, without spaces or letters.");
  input.focus();
  return null;
}

function fieldError(form, text) {
  const p = $(`${form}-error`);
  const input = $(`${form}-totp`);
  p.textContent = text ?? "";
  p.hidden = !text;
  if (text) {
    input.setAttribute("aria-invalid", "true");
    announce(text);
  } else {
    input.removeAttribute("aria-invalid");
  }
}

function busy(form, on) {
  const submit = $(`${form}-submit`);
  const input = $(`${form}-totp`);
  if (on) {
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
  } else {
    submit.removeAttribute("aria-busy");
    submit.disabled = input.disabled;
  }
}

// A 6-digit code refused by the API (wrong, throttled, locked) on either form.
function refusedCode(form, err) {
  const problem = err instanceof ApiError ? err.problem : null;
  const type = problem?.type ?? "";
  const input = $(`${form}-totp`);
  if (type === "/problems/too-many-attempts") {
    const seconds = err.retryAfter ?? 60;
    throttle(form, new Date(Date.now() + seconds * 1000));
  } else if (type === "/problems/totp-locked") {
    lock(form);
  } else if (type === "/problems/invalid-totp") {
    fieldError(form, failureMessage("invalid-totp"));
    input.select();
    input.focus();
  } else if (type === "/problems/invalid-request") {
    fieldError(form, "Enter the 6 digits your authenticator app shows, without spaces or letters.");
    input.focus();
  } else {
    fieldError(form, "That did not work. Please try again in a moment.");
    input.focus();
  }
}

// What the status's limits say for the form, before anyone types.
function applyLimits(form) {
  const limits = status?.limits;
  if (limits?.totp_locked) {
    lock(form);
  } else if (limits?.totp_throttled_until && new Date(limits.totp_throttled_until) > new Date()) {
    throttle(form, new Date(limits.totp_throttled_until));
  }
}

function throttle(form, until) {
  const input = $(`${form}-totp`);
  disableCode(form, true);
  fieldError(form, `Too many wrong codes. To protect your account, you can try again at ${untilText(until, formatTime)}.`);
  input.removeAttribute("aria-invalid");
  $(`${form}-error`).focus();
  clearTimeout(waits.get(form));
  const wait = Math.min(Math.max(until.getTime() - Date.now(), 0) + 500, 2 ** 31 - 1);
  waits.set(form, setTimeout(() => {
    disableCode(form, false);
    fieldError(form, null);
    announce("You can enter a code again.");
    input.focus();
  }, wait));
}

function lock(form) {
  disableCode(form, true);
  fieldError(form, "Your authenticator codes are locked after too many wrong codes in a row. It stays locked until your administrator unlocks it: contact them to continue.");
  $(`${form}-totp`).removeAttribute("aria-invalid");
  $(`${form}-error`).focus();
}

// While throttled or locked the field is off and the message is a notice, not the
// field's fault (no aria-invalid), focusable so focus can go to it.
function disableCode(form, off) {
  const input = $(`${form}-totp`);
  const error = $(`${form}-error`);
  input.disabled = off;
  $(`${form}-submit`).disabled = off;
  error.classList.toggle("sec-blocked", off);
  if (off) {
    error.tabIndex = -1;
  } else {
    error.removeAttribute("tabindex");
  }
}

// --- after the codes -----------------------------------------------------------------

async function finishCodes() {
  codes.wipe();
  try {
    await refresh();
  } catch (err) {
    if (isEnded(err)) return;
  }
  show("regen-open");
  $("codes-title").focus();
  announce("The codes are hidden now. Your backup code summary is shown.");
}

// --- events --------------------------------------------------------------------------

async function loadEvents(pending = api("GET", EVENTS)) {
  let events;
  try {
    ({ events } = await pending);
  } catch (err) {
    if (isEnded(err)) return;
    show("events");
    $("events-empty").textContent = "Your recent activity could not be loaded.";
    show("events-empty");
    return;
  }
  const rows = events.map((e) => {
    const tr = document.createElement("tr");
    const when = document.createElement("time");
    when.dateTime = e.occurred_at;
    when.textContent = formatTime(e.occurred_at);
    const outcome = document.createElement("span");
    outcome.className = `sec-outcome sec-outcome-${e.outcome === "success" ? "ok" : "bad"}`;
    outcome.textContent = outcomeLabel(e.outcome);
    const from = [e.source_ip, deviceLabel(e.user_agent)].filter(Boolean).join(" · ");
    for (const content of [when, eventLabel(e.type, e.details), outcome, from || "—"]) {
      const td = document.createElement("td");
      td.append(content);
      tr.append(td);
    }
    return tr;
  });
  $("events-body").replaceChildren(...rows);
  show("events-table", rows.length > 0);
  show("events-empty", rows.length === 0);
  show("events");
}

main();
