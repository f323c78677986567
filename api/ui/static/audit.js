// /ui/audit: the security team's trail. The chain's verification at the top, then the
// events (GET /v1/audit/events) with filters, cursor paging, each event's details and
// hashes, and CSV/NDJSON export links for the filters applied.

import { api, ApiError } from "./lib/api.js";
import { announce } from "./lib/dom.js";
import { mountChrome, sessionEnded } from "./lib/session.js";
import {
  FIELD_OF_PARAM,
  apiParams,
  describe,
  fromLocation,
  noFilters,
  readForm,
  toSearch,
  validate,
  writeForm,
} from "./lib/audit-filters.js";
import {
  renderChecking,
  renderUnverified,
  renderVerification,
} from "./lib/audit-chain.js";
import { renderEvents } from "./lib/audit-table.js";
import { groupDigits } from "./lib/audit-text.js";

const $ = (id) => document.getElementById(id);
const FIELDS = ["user", "type", "from", "to", "request"];

const state = {
  filters: noFilters(),
  cursors: [null], // cursors[i] opens page i (the API's `next` of page i - 1)
  index: 0,
  next: null,
  request: 0, // answers to older requests are dropped
};

// --- problems ------------------------------------------------------------------------

function explain(err) {
  if (err instanceof ApiError) {
    const problem = err.problem || {};
    if (err.status === 429) {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} seconds.` : "";
      return `Too many requests just now.${wait}`;
    }
    return problem.detail || problem.title || `The service answered ${err.status}.`;
  }
  return "The service did not answer. Check the connection and try again.";
}

function isSessionEnd(err) {
  return err instanceof ApiError && err.status === 401;
}

// --- filters -------------------------------------------------------------------------

function showFieldErrors(problems) {
  const form = $("filters");
  let first = null;
  for (const key of FIELDS) {
    const input = form.elements[key];
    const message = $(`${input.id}-error`);
    const text = problems[key];
    message.textContent = text || "";
    message.hidden = !text;
    if (text) {
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    } else {
      input.removeAttribute("aria-invalid");
    }
  }
  return first;
}

function exportHref(format) {
  const params = apiParams(state.filters);
  params.set("format", format);
  return `/v1/audit/events?${params}`;
}

function applyFilters(filters, { push, focus }) {
  state.filters = filters;
  const search = toSearch(filters);
  if (push && search !== window.location.search) {
    window.history.pushState(null, "", window.location.pathname + search);
  }
  $("export-csv").href = exportHref("csv");
  $("export-ndjson").href = exportHref("ndjson");
  state.cursors = [null];
  return loadPage(0, { focus });
}

function onSubmit(event) {
  event.preventDefault();
  const filters = readForm($("filters"));
  const first = showFieldErrors(validate(filters));
  if (first) {
    first.focus();
    announce("Some filters need correcting.");
    return;
  }
  applyFilters(filters, { push: true, focus: $("position") });
}

function onClear() {
  const filters = noFilters();
  writeForm($("filters"), filters);
  showFieldErrors({});
  applyFilters(filters, { push: true, focus: $("f-user") });
}

function onRequest(requestId) {
  const filters = { ...noFilters(), request: requestId, limit: state.filters.limit };
  writeForm($("filters"), filters);
  showFieldErrors({});
  applyFilters(filters, { push: true, focus: $("position") });
}

// --- events --------------------------------------------------------------------------

function setLoading(loading) {
  $("events").setAttribute("aria-busy", String(loading));
  $("events-scroll").classList.toggle("is-loading", loading);
  if (loading) {
    $("page-prev").disabled = true;
    $("page-next").disabled = true;
  }
}

function positionText(events) {
  const page = state.index + 1;
  const first = events[0].seq;
  const last = events[events.length - 1].seq;
  const count = events.length === 1 ? "1 event" : `${groupDigits(events.length)} events`;
  const range = first === last ? `seq ${first}` : `seq ${first} to ${last}`;
  const more = state.next ? "more follow" : "the last page";
  return `Page ${page}: ${count}, ${range}; ${more}.`;
}

async function loadPage(index, { focus } = {}) {
  const ticket = ++state.request;
  setLoading(true);
  $("position").textContent = "Loading events…";
  $("events-error").hidden = true;
  const params = apiParams(state.filters);
  params.set("limit", state.filters.limit);
  if (state.cursors[index]) params.set("cursor", state.cursors[index]);
  let page;
  try {
    page = await api("GET", `/v1/audit/events?${params}`);
  } catch (err) {
    if (ticket !== state.request) return;
    setLoading(false);
    if (isSessionEnd(err)) {
      sessionEnded();
      return;
    }
    const field = err instanceof ApiError && err.status === 422 && err.problem && err.problem.field;
    if (field && FIELD_OF_PARAM[field] && FIELDS.includes(FIELD_OF_PARAM[field])) {
      const input = showFieldErrors({ [FIELD_OF_PARAM[field]]: explain(err) });
      $("position").textContent = "No events shown: a filter needs correcting.";
      input.focus();
      return;
    }
    renderEvents($("events"), [], onRequest);
    $("events-empty").hidden = true;
    $("events-scroll").hidden = true;
    $("position").textContent = "No events shown.";
    $("events-error-text").textContent = `The events could not be loaded. ${explain(err)}`;
    $("events-error").hidden = false;
    announce("The events could not be loaded.");
    if (focus) $("events-retry").focus();
    return;
  }
  if (ticket !== state.request) return;
  state.index = index;
  state.next = page.next;
  state.cursors.length = index + 1;
  if (page.next) state.cursors.push(page.next);
  renderEvents($("events"), page.events, onRequest);
  setLoading(false);

  const selection = describe(state.filters);
  const empty = page.events.length === 0;
  $("events-scroll").hidden = empty;
  $("events-empty").hidden = !empty;
  let sentence;
  if (empty) {
    $("position").textContent = index === 0 ? "No events." : "No further events.";
    sentence = selection ? `No events match ${selection}.` : "The trail holds no events.";
  } else {
    $("position").textContent = positionText(page.events);
    sentence = `${positionText(page.events)}${selection ? ` Filtered by ${selection}.` : ""}`;
  }
  $("page-label").textContent = empty ? "" : `Page ${index + 1}`;
  $("page-prev").disabled = index === 0;
  $("page-next").disabled = !page.next;
  announce(sentence);
  if (focus) {
    // The pager keeps the focus where it still works; otherwise the position line.
    const target = focus.disabled ? $("position") : focus;
    target.focus();
  }
}

// --- the chain -----------------------------------------------------------------------

async function verify({ speak }) {
  renderChecking();
  try {
    const sentence = renderVerification(await api("GET", "/v1/audit/verification"));
    if (speak) announce(sentence);
  } catch (err) {
    if (isSessionEnd(err)) {
      sessionEnded();
      return;
    }
    renderUnverified(explain(err));
    if (speak) announce("The chain could not be verified just now.");
  }
}

// --- start ---------------------------------------------------------------------------

function wire() {
  $("filters").addEventListener("submit", onSubmit);
  $("filters-clear").addEventListener("click", onClear);
  $("events-retry").addEventListener("click", () => loadPage(state.index, { focus: $("position") }));
  $("page-next").addEventListener("click", () => {
    if (state.next) loadPage(state.index + 1, { focus: $("page-next") });
  });
  $("page-prev").addEventListener("click", () => {
    if (state.index > 0) loadPage(state.index - 1, { focus: $("page-prev") });
  });
  $("chain-recheck").addEventListener("click", (event) => {
    if (event.currentTarget.getAttribute("aria-disabled") !== "true") verify({ speak: true });
  });
  window.addEventListener("popstate", () => {
    const filters = fromLocation(window.location.search);
    writeForm($("filters"), filters);
    showFieldErrors({});
    applyFilters(filters, { push: false, focus: $("position") });
  });
}

async function main() {
  let session;
  try {
    session = await mountChrome();
  } catch (err) {
    if (isSessionEnd(err)) sessionEnded();
    document.documentElement.dataset.state = "error";
    return;
  }
  if (!session) {
    document.documentElement.dataset.state = "error";
    return;
  }
  wire();
  const filters = fromLocation(window.location.search);
  writeForm($("filters"), filters);
  await Promise.all([verify({ speak: false }), applyFilters(filters, { push: false })]);
  document.documentElement.dataset.state = "ready";
}

main();
