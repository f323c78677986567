// The audit page's table: one <tbody> per event, its summary row and a hidden row with
// the details and hashes, opened by the button in the seq cell (a disclosure).
// Events are attacker-influenced (user agents, ids, details): text only, never markup.

import { formatUtc } from "./audit-text.js";

function node(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined && text !== null) made.textContent = String(text);
  return made;
}

function cell(text, className) {
  const td = node("td", className);
  if (text === null || text === undefined || text === "") {
    td.append(node("span", "audit-none", "—"));
  } else {
    td.textContent = String(text);
  }
  return td;
}

// The word carries the meaning; the colour (the base's badges) only repeats it.
const OUTCOMES = {
  success: ["Success", "badge-ok"],
  failure: ["Failure", "badge-warning"],
  denied: ["Denied", "badge-danger"],
};

function outcomeCell(outcome) {
  const td = node("td");
  const [word, kind] = OUTCOMES[outcome] ?? [outcome, "badge-neutral"];
  const badge = node("span", `badge ${kind} audit-outcome`, word);
  badge.dataset.outcome = outcome;
  td.append(badge);
  return td;
}

function actorText(actor) {
  if (!actor || !actor.principal_id) return actor && actor.role ? actor.role : "";
  return actor.role ? `${actor.principal_id} (${actor.role})` : actor.principal_id;
}

function sourceCell(event) {
  const td = node("td", "audit-source");
  td.append(event.source_ip ? node("span", "audit-ip", event.source_ip) : node("span", "audit-none", "—"));
  if (event.user_agent) {
    const agent = node("span", "audit-agent", event.user_agent);
    agent.title = event.user_agent; // an attribute set as text, never parsed
    td.append(agent);
  }
  return td;
}

function fact(list, term, value, className) {
  const wrap = node("div");
  wrap.append(node("dt", null, term));
  const dd = node("dd");
  if (value === null || value === undefined || value === "") {
    dd.append(node("span", "audit-none", "none"));
  } else {
    dd.append(node(className ? "code" : "span", className, value));
  }
  wrap.append(dd);
  list.append(wrap);
}

function detailPanel(event, onRequest) {
  const panel = node("div", "audit-detail");
  const facts = node("dl", "facts");
  fact(facts, "Event id", event.id, "audit-mono");
  fact(facts, "Occurred", event.occurred_at, "audit-mono");
  fact(facts, "Actor", actorText(event.actor));
  fact(facts, "Actor's token id", event.actor && event.actor.token_id, "audit-mono");
  fact(facts, "User", event.user_id);
  fact(facts, "Request id", event.request_id, "audit-mono");
  fact(facts, "Server request id", event.server_request_id, "audit-mono");
  fact(facts, "Source address", event.source_ip, "audit-mono");
  fact(facts, "User agent", event.user_agent, "audit-mono");
  panel.append(facts);

  panel.append(node("h3", "audit-detail-title", "Details"));
  const details = node("pre", "audit-json");
  details.textContent = JSON.stringify(event.details ?? {}, null, 2);
  panel.append(details);

  panel.append(node("h3", "audit-detail-title", "Hashes"));
  const hashes = node("dl", "audit-hashes");
  fact(hashes, "Previous hash", event.prev_hash, "audit-hash");
  fact(hashes, "Hash", event.hash, "audit-hash");
  panel.append(hashes);

  if (event.request_id && onRequest) {
    const same = node("button", "button-quiet audit-same-request", "Show every event of this request");
    same.type = "button";
    same.addEventListener("click", () => onRequest(event.request_id));
    panel.append(same);
  }
  return panel;
}

/** One event as a <tbody>: the summary row and its (hidden) details row. */
export function eventBody(event, columns, onRequest) {
  const body = node("tbody", "audit-event");
  body.dataset.seq = String(event.seq);
  const row = node("tr", "audit-row");

  const seqCell = node("th");
  seqCell.scope = "row";
  const toggle = node("button", "audit-toggle");
  toggle.type = "button";
  toggle.setAttribute("aria-expanded", "false");
  const detailsId = `event-${event.seq}-details`;
  toggle.setAttribute("aria-controls", detailsId);
  toggle.append(node("span", "visually-hidden", "Details of event "), node("span", null, event.seq));
  seqCell.append(toggle);
  row.append(seqCell);

  const time = node("time", "audit-time", formatUtc(event.occurred_at));
  time.dateTime = event.occurred_at;
  const timeCell = node("td");
  timeCell.append(time);
  row.append(timeCell);
  row.append(cell(event.type, "audit-type"));
  row.append(outcomeCell(event.outcome));
  row.append(cell(event.user_id, "audit-user"));
  row.append(cell(actorText(event.actor), "audit-actor"));
  row.append(sourceCell(event));
  body.append(row);

  const more = node("tr", "audit-more");
  more.id = detailsId;
  more.hidden = true;
  const moreCell = node("td");
  moreCell.colSpan = columns;
  more.append(moreCell);
  body.append(more);

  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    body.classList.toggle("is-open", open);
    if (open && !moreCell.firstChild) moreCell.append(detailPanel(event, onRequest));
    more.hidden = !open;
  });
  return body;
}

/** Replace the table's events with these. */
export function renderEvents(table, events, onRequest) {
  for (const old of table.querySelectorAll("tbody")) old.remove();
  const columns = table.tHead.rows[0].cells.length;
  const fragment = document.createDocumentFragment();
  for (const event of events) fragment.append(eventBody(event, columns, onRequest));
  table.append(fragment);
}
