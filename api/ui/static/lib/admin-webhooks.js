// The webhooks panel: the organization's webhooks, a new one with its secret shown
// once, rotation (the new secret shown once), ping, deletion, and each webhook's
// deliveries with their state and a retry. A secret lives only in the one input
// that shows it, until "I have stored it" or leaving the page.

import {
  announce, badge, busy, byId, call, clearProblems, confirmIn, done, fieldError, h,
  segment, showProblem, timeCell,
} from "./admin-common.js";

const BASE = "/v1/org/webhooks";
// The contract's webhook types (API.md "Webhooks"), offered one by one at creation.
const TYPES = [
  "mfa.enrolled", "mfa.reset", "backup_codes.generated", "backup_codes.used",
  "backup_codes.low", "backup_codes.exhausted", "backup_codes.rejected",
  "backup_codes.revoked", "user.locked_out", "user.repudiated", "policy.changed",
  "audit.checkpoint", "webhook.ping",
];
const FIELDS = { url: "webhook-url", description: "webhook-description", events: "webhook-all" };
const DELIVERIES = 20;
const WATCH_EVERY_MS = 1000;
const WATCH_TIMES = 15; // how long a ping or retry is watched before the list stays as it is
let anchor = null; // what gets focus when the secret panel closes
let views = []; // the deliveries views on the page, whose watch timers a reload stops
const opened = new Set(); // webhooks whose deliveries are shown, kept open across a reload of the list

// --- the secret, shown once ---------------------------------------------------------

function showSecret(secret, forWhat, focusAfter) {
  const panel = byId("webhook-secret");
  byId("webhook-secret-value").value = secret;
  byId("webhook-secret-for").textContent = forWhat;
  byId("webhook-secret-copied").hidden = true;
  anchor = focusAfter;
  panel.hidden = false;
  panel.focus();
  announce("The signing secret is shown once. Copy it now: you won't see it again.");
}

function forgetSecret() {
  byId("webhook-secret-value").value = "";
  byId("webhook-secret").hidden = true;
  const target = anchor && anchor.isConnected ? anchor : byId("webhooks-title");
  anchor = null;
  if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
  target.focus();
  announce("Secret hidden. It cannot be shown again.");
}

async function copySecret() {
  const input = byId("webhook-secret-value");
  const note = byId("webhook-secret-copied");
  try {
    await navigator.clipboard.writeText(input.value);
    note.textContent = "Copied to the clipboard.";
  } catch {
    input.select();
    note.textContent = "The browser refused the clipboard: the secret is selected, copy it with your keyboard.";
  }
  note.hidden = false;
  announce(note.textContent);
}

// --- deliveries ---------------------------------------------------------------------

const STATE = { pending: "warning", succeeded: "ok", dead: "danger" };

function answerOf(d) {
  if (d.last_status_code) return `HTTP ${d.last_status_code}${d.last_error ? ` · ${d.last_error}` : ""}`;
  if (d.last_error) return d.last_error;
  return d.attempts ? "—" : "Not tried yet";
}

function stateOf(d) {
  if (d.status === "pending" && d.attempts > 0) return badge("Failed, retry scheduled", "warning");
  return badge(d.status === "pending" ? "Pending" : d.status === "dead" ? "Dead" : "Delivered", STATE[d.status] ?? "neutral");
}

function deliveryRow(hook, d, view) {
  const retryable = d.status === "dead" || (d.status === "pending" && d.attempts > 0);
  const retry = retryable
    ? h("button", {
      type: "button",
      class: "button-secondary button-small",
      "aria-label": `Retry the ${d.type} delivery now`,
    }, "Retry now")
    : "";
  const tr = h("tr", { "data-delivery-id": d.id, "data-status": d.status },
    h("td", { "data-label": "Type" }, h("span", { class: "mono" }, d.type)),
    h("td", { "data-label": "State" }, stateOf(d)),
    h("td", { "data-label": "Attempts" }, String(d.attempts)),
    h("td", { "data-label": "Last attempt" }, timeCell(d.last_attempt_at)),
    h("td", { "data-label": "Answer" }, answerOf(d)),
    h("td", { "data-label": "Next attempt" }, d.status === "pending" ? timeCell(d.next_attempt_at) : "—"),
    h("td", { class: "admin-cell-action" }, retry));
  if (retryable) {
    const button = tr.querySelector("button");
    button.addEventListener("click", async () => {
      clearProblems(view.root);
      try {
        await busy(button, () => call("POST", `${BASE}/${segment(hook.id)}/deliveries/${segment(d.id)}/retry`));
        announce(`Retry of the ${d.type} delivery queued.`);
        await refresh(hook, view, null);
        view.caption.focus();
        watch(hook, view, d.id, d.attempts);
      } catch (err) {
        showProblem(view.error, err);
      }
    });
  }
  return tr;
}

async function refresh(hook, view, cursor) {
  const params = new URLSearchParams({ limit: String(DELIVERIES) });
  if (view.status.value) params.set("status", view.status.value);
  if (cursor) params.set("cursor", cursor);
  const page = await call("GET", `${BASE}/${segment(hook.id)}/deliveries?${params}`);
  view.rows.replaceChildren(...page.deliveries.map((d) => deliveryRow(hook, d, view)));
  view.wrap.hidden = page.deliveries.length === 0;
  view.empty.hidden = page.deliveries.length > 0;
  view.next = page.next;
  view.older.hidden = !page.next;
  view.cursor = cursor;
  return page.deliveries;
}

/** After a ping or a retry: refresh a few times until that delivery was tried. */
function watch(hook, view, deliveryId, attemptsBefore) {
  clearTimeout(view.timer);
  let left = WATCH_TIMES;
  const tick = async () => {
    left -= 1;
    try {
      const shown = await refresh(hook, view, view.cursor);
      const it = shown.find((d) => d.id === deliveryId);
      if (it && it.attempts > attemptsBefore) {
        announce(`${it.type} delivery: ${it.status === "succeeded" ? "delivered" : `not delivered (${answerOf(it)})`}.`);
        // A dead delivery may have disabled its webhook (a 410): show the cards anew.
        if (it.status === "dead") await load();
        return;
      }
    } catch {
      return; // the error is the next action's to show
    }
    if (left > 0) view.timer = setTimeout(tick, WATCH_EVERY_MS);
  };
  view.timer = setTimeout(tick, WATCH_EVERY_MS);
}

function deliveriesView(hook) {
  const n = hook.id;
  const status = h("select", { id: `deliveries-status-${n}` },
    h("option", { value: "" }, "Any state"),
    h("option", { value: "pending" }, "Pending"),
    h("option", { value: "succeeded" }, "Delivered"),
    h("option", { value: "dead" }, "Dead"));
  const caption = h("caption", { id: `deliveries-caption-${n}`, tabindex: "-1" }, "Deliveries, newest first");
  const rows = h("tbody");
  const table = h("table", { class: "admin-table admin-deliveries" }, caption,
    h("thead", {}, h("tr", {},
      ...["Type", "State", "Attempts", "Last attempt", "Answer", "Next attempt"].map((t) => h("th", { scope: "col" }, t)),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Action")))),
    rows);
  const wrap = h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-labelledby": `deliveries-caption-${n}` }, table);
  const refreshButton = h("button", { type: "button", class: "button-secondary button-small" }, "Refresh");
  const older = h("button", { type: "button", class: "button-quiet button-small", hidden: true }, "Older deliveries");
  const empty = h("p", { class: "admin-empty", hidden: true }, "No delivery yet.");
  const error = h("p", { class: "field-error", hidden: true });
  const root = h("div", { class: "admin-deliveries-box", id: `deliveries-${n}`, hidden: true },
    h("div", { class: "form-row admin-filter-tight" },
      h("div", { class: "field" }, h("label", { for: `deliveries-status-${n}` }, "State"), status),
      h("div", { class: "actions" }, refreshButton)),
    wrap,
    empty, error,
    h("div", { class: "admin-pager" }, older));
  const view = { root, status, caption, rows, wrap, empty, error, older, next: null, cursor: null, timer: null };
  const reload = async (cursor, button) => {
    clearProblems(root);
    try {
      const shown = await busy(button, () => refresh(hook, view, cursor));
      announce(`${shown.length} deliver${shown.length === 1 ? "y" : "ies"} shown.`);
    } catch (err) {
      showProblem(error, err);
    }
  };
  status.addEventListener("change", () => reload(null, refreshButton));
  refreshButton.addEventListener("click", () => reload(null, refreshButton));
  older.addEventListener("click", () => reload(view.next, older));
  return view;
}

// --- one webhook ----------------------------------------------------------------------

function eventsText(events) {
  return events.includes("*") ? "All events" : events.join(", ");
}

function card(hook) {
  const n = hook.id;
  const title = h("h4", { class: "admin-hook-url mono", id: `hook-title-${n}`, tabindex: "-1" }, hook.url);
  const stateBadge = hook.enabled
    ? badge("Enabled", "ok")
    : badge(`Disabled${hook.disabled_reason ? `: ${hook.disabled_reason}` : ""}`, "danger");
  const view = deliveriesView(hook);
  views.push(view);
  const ping = h("button", { type: "button", class: "button-secondary" }, "Send a ping");
  const show = h("button", { type: "button", class: "button-secondary", "aria-expanded": "false", "aria-controls": view.root.id }, "Deliveries");
  const toggle = h("button", { type: "button", class: "button-secondary" }, hook.enabled ? "Turn off" : "Turn on");
  const rotate = h("button", { type: "button", class: "button-secondary" }, "Rotate secret");
  const remove = h("button", { type: "button", class: "button-danger" }, "Delete");
  const confirmTitle = h("h5", { id: `hook-confirm-title-${n}` });
  const confirmText = h("p");
  const go = h("button", { type: "button", class: "button-danger" });
  const cancel = h("button", { type: "button", class: "button-quiet" }, "Cancel");
  const confirm = h("div", {
    class: "admin-confirm admin-confirm-danger", role: "group",
    "aria-labelledby": confirmTitle.id, tabindex: "-1", hidden: true,
  }, confirmTitle, confirmText, h("div", { class: "actions" }, go, cancel));
  const error = h("p", { class: "field-error", hidden: true });
  const notice = h("p", { class: "notice notice-success", tabindex: "-1", hidden: true });
  const item = h("li", { class: "admin-card admin-hook", "data-webhook-id": n },
    title,
    hook.description ? h("p", { class: "admin-hook-description" }, hook.description) : "",
    h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "State"), h("dd", {}, stateBadge)),
      h("div", {}, h("dt", {}, "Events"), h("dd", {}, eventsText(hook.events))),
      h("div", {}, h("dt", {}, "Created"), h("dd", {}, timeCell(hook.created_at)))),
    h("div", { class: "actions" }, ping, show, toggle, rotate, remove),
    confirm, error, notice, view.root);

  const ask = async (opener, what, text, label) => {
    clearProblems(item);
    notice.hidden = true;
    confirmTitle.textContent = what;
    confirmText.textContent = text;
    go.textContent = label;
    return confirmIn(confirm, go, cancel, opener);
  };
  const openDeliveries = async () => {
    view.root.hidden = false;
    show.setAttribute("aria-expanded", "true");
    opened.add(n);
    await refresh(hook, view, null);
  };
  if (opened.has(n)) openDeliveries().catch((err) => showProblem(error, err));

  ping.addEventListener("click", async () => {
    clearProblems(item);
    notice.hidden = true;
    try {
      const delivery = await busy(ping, () => call("POST", `${BASE}/${segment(n)}/ping`));
      await openDeliveries();
      done(notice, "Ping queued. Its delivery shows below as it is tried.");
      watch(hook, view, delivery.id, 0);
    } catch (err) {
      showProblem(error, err);
    }
  });
  show.addEventListener("click", async () => {
    clearProblems(item);
    if (!view.root.hidden) {
      view.root.hidden = true;
      clearTimeout(view.timer);
      opened.delete(n);
      show.setAttribute("aria-expanded", "false");
      return;
    }
    try {
      await busy(show, openDeliveries);
      view.caption.focus();
      announce("Deliveries shown.");
    } catch (err) {
      showProblem(error, err);
    }
  });
  toggle.addEventListener("click", async () => {
    clearProblems(item);
    const enabled = !hook.enabled;
    try {
      await busy(toggle, () => call("PATCH", `${BASE}/${segment(n)}`, { body: { enabled } }));
      clearTimeout(view.timer);
      await load();
      const again = document.getElementById(`hook-title-${n}`);
      if (again) again.focus();
      announce(enabled
        ? `Webhook ${hook.url} turned on; its pending deliveries resume.`
        : `Webhook ${hook.url} turned off; nothing is sent to it until it is turned on.`);
    } catch (err) {
      showProblem(error, err);
    }
  });
  rotate.addEventListener("click", async () => {
    const yes = await ask(rotate, "Rotate the signing secret?",
      "A new secret is made and shown once. The old one keeps signing beside it for 24 hours, so your receiver can switch without losing a delivery.",
      "Rotate secret");
    if (!yes) return;
    try {
      const answer = await busy(go, () => call("POST", `${BASE}/${segment(n)}/secret`));
      confirm.hidden = true;
      showSecret(answer.secret, `The new secret of ${hook.url}; the old one still signs for 24 hours.`, title);
    } catch (err) {
      confirm.hidden = true;
      showProblem(error, err);
      rotate.focus();
    }
  });
  remove.addEventListener("click", async () => {
    const yes = await ask(remove, "Delete this webhook?",
      `${hook.url} hears nothing more from now on, and its pending deliveries are dropped.`,
      "Delete webhook");
    if (!yes) return;
    try {
      await busy(go, () => call("DELETE", `${BASE}/${segment(n)}`));
      clearTimeout(view.timer);
      await load();
      const heading = byId("webhooks-title");
      heading.setAttribute("tabindex", "-1");
      heading.focus();
      announce(`Webhook ${hook.url} deleted.`);
    } catch (err) {
      confirm.hidden = true;
      showProblem(error, err);
      remove.focus();
    }
  });
  return item;
}

export async function load() {
  const { webhooks } = await call("GET", BASE);
  for (const old of views) clearTimeout(old.timer);
  views = [];
  const list = byId("webhook-list");
  // Focus inside a card that is drawn anew goes to that card's title.
  const focused = document.activeElement?.closest?.("[data-webhook-id]")?.dataset.webhookId;
  list.replaceChildren(...webhooks.map(card));
  if (focused) document.getElementById(`hook-title-${focused}`)?.focus();
  byId("webhook-list").hidden = webhooks.length === 0;
  byId("webhook-empty").hidden = webhooks.length > 0;
  return webhooks;
}

// --- creation -----------------------------------------------------------------------

function chosenEvents() {
  if (byId("webhook-all").checked) return ["*"];
  return [...byId("webhook-types").querySelectorAll("input:checked")].map((box) => box.value);
}

function typeBoxes() {
  const grid = byId("webhook-types");
  grid.replaceChildren(...TYPES.map((type) => h("label", { class: "check mono" },
    h("input", { type: "checkbox", value: type, disabled: true }), type)));
  byId("webhook-all").addEventListener("change", (event) => {
    for (const box of grid.querySelectorAll("input")) box.disabled = event.currentTarget.checked;
  });
}

export function wire() {
  typeBoxes();
  byId("webhook-secret-copy").addEventListener("click", copySecret);
  byId("webhook-secret-done").addEventListener("click", forgetSecret);
  // Leaving the page takes the secret with it, and a restored page never shows it.
  window.addEventListener("pagehide", () => { byId("webhook-secret-value").value = ""; });

  const form = byId("webhook-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems(form);
    const url = byId("webhook-url").value.trim();
    if (url === "") {
      fieldError("webhook-url", "Enter the address of your receiver.");
      return;
    }
    const events = chosenEvents();
    if (events.length === 0) {
      fieldError("webhook-all", "Choose at least one event.");
      return;
    }
    const body = { url, events, description: byId("webhook-description").value.trim() };
    try {
      const created = await busy(byId("webhook-add"), () => call("POST", BASE, { body }));
      form.reset();
      for (const box of byId("webhook-types").querySelectorAll("input")) box.disabled = true;
      byId("webhook-create").open = false;
      await load();
      const title = document.getElementById(`hook-title-${created.id}`);
      showSecret(created.secret, `The webhook for ${created.url} is created.`, title);
    } catch (err) {
      showProblem(byId("webhook-error"), err, FIELDS);
    }
  });
}
