// The tokens panel: GET /v1/org/tokens with its filters and cursor paging, newest
// first; an active token or browser session revoked after a confirmation.

import {
  announce, badge, busy, byId, call, clearProblems, confirmIn, h, segment, shortId,
  showProblem, timeCell,
} from "./admin-common.js";

const PAGE = 25;
const FIELDS = { role: "token-role", principal_id: "token-principal" };
let filters = {};
let cursors = [null]; // the cursor of each page shown so far; the last is this page's
let next = null;

const KIND = { session: "Browser session", token: "API token" };

function query(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const [name, value] of Object.entries(filters)) params.set(name, value);
  if (cursor) params.set("cursor", cursor);
  return `/v1/org/tokens?${params}`;
}

function state(token) {
  if (token.revoked_at) return [badge("Revoked", "danger"), " ", timeCell(token.revoked_at)];
  if (token.expires_at && Date.parse(token.expires_at) <= Date.now()) return [badge("Expired", "neutral")];
  return [badge("Active", "ok")];
}

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

function row(token) {
  const active = !token.revoked_at
    && !(token.expires_at && Date.parse(token.expires_at) <= Date.now());
  const action = active
    ? h("button", {
      type: "button",
      class: "button-danger button-small",
      "data-token": token.token_id,
      "aria-label": `Revoke the ${KIND[token.kind] ?? token.kind} of ${token.principal_id}, created ${token.created_at}`,
    }, "Revoke")
    : "";
  const tr = h("tr", { "data-token-id": token.token_id, "data-kind": token.kind },
    cell("Principal", h("span", { class: "mono" }, token.principal_id),
      h("span", { class: "admin-sub mono", title: token.token_id }, `id ${shortId(token.token_id)}`)),
    cell("Role", token.role),
    cell("Kind", KIND[token.kind] ?? token.kind),
    cell("Created", timeCell(token.created_at)),
    cell("Last used", timeCell(token.last_used_at)),
    cell("Expires", token.expires_at ? timeCell(token.expires_at) : "Never"),
    cell("State", ...state(token)),
    h("td", { class: "admin-cell-action" }, action));
  if (active) {
    tr.querySelector("button").addEventListener("click", (event) => revoke(token, event.currentTarget));
  }
  return tr;
}

async function show(cursor) {
  const page = await call("GET", query(cursor));
  next = page.next;
  byId("token-rows").replaceChildren(...page.tokens.map(row));
  byId("token-empty").hidden = page.tokens.length > 0;
  byId("token-wrap").hidden = page.tokens.length === 0;
  byId("token-next").hidden = !next;
  byId("token-first").hidden = cursors.length <= 1;
  const n = cursors.length;
  byId("token-caption").textContent = n > 1 ? `Tokens, page ${n}` : "Tokens, newest first";
  return page.tokens.length;
}

async function revoke(token, button) {
  const panel = byId("token-confirm");
  clearProblems(panel);
  const kind = KIND[token.kind] ?? token.kind;
  byId("token-confirm-title").textContent = `Revoke this ${kind.toLowerCase()}?`;
  byId("token-confirm-text").textContent =
    `The ${kind.toLowerCase()} of ${token.principal_id} (role ${token.role}, id ${token.token_id}) stops working at its next request, in every process. This cannot be undone.`;
  const go = byId("token-confirm-go");
  if (!(await confirmIn(panel, go, byId("token-confirm-cancel"), button))) return;
  try {
    await busy(go, () => call("DELETE", `/v1/org/tokens/${segment(token.token_id)}`));
    panel.hidden = true;
    await show(cursors[cursors.length - 1]);
    const again = byId("token-rows").querySelector(`tr[data-token-id="${CSS.escape(token.token_id)}"]`);
    (again ?? byId("token-caption")).setAttribute("tabindex", "-1");
    (again ?? byId("token-caption")).focus();
    announce(`${kind} of ${token.principal_id} revoked.`);
  } catch (err) {
    showProblem(byId("token-revoke-error"), err);
  }
}

export async function load() {
  await show(null);
}

export function wire() {
  byId("token-filter").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems(byId("token-filter"));
    const chosen = {};
    const role = byId("token-role").value;
    const principal = byId("token-principal").value.trim();
    if (role) chosen.role = role;
    if (principal) chosen.principal_id = principal;
    if (!byId("token-revoked").checked) chosen.include_revoked = "false";
    filters = chosen;
    cursors = [null];
    try {
      const count = await busy(byId("token-apply"), () => show(null));
      announce(`${count} token${count === 1 ? "" : "s"} shown${next ? ", more on the next page" : ""}.`);
    } catch (err) {
      showProblem(byId("token-filter-error"), err, FIELDS);
    }
  });
  byId("token-next").addEventListener("click", async () => {
    cursors.push(next);
    try {
      const count = await show(next);
      byId("token-caption").setAttribute("tabindex", "-1");
      byId("token-caption").focus();
      announce(`Page ${cursors.length}: ${count} tokens.`);
    } catch (err) {
      cursors.pop();
      showProblem(byId("token-filter-error"), err);
    }
  });
  byId("token-first").addEventListener("click", async () => {
    cursors = [null];
    try {
      await show(null);
      byId("token-caption").setAttribute("tabindex", "-1");
      byId("token-caption").focus();
      announce("First page of tokens.");
    } catch (err) {
      showProblem(byId("token-filter-error"), err);
    }
  });
}
