// Small DOM helpers for the pages. Text always goes in as text (textContent or text
// nodes), never as HTML: nothing an API answers is ever parsed as markup.

/**
 * el("button", {class: "button-secondary", type: "button", onclick: fn}, "Copy")
 * attrs: `class`, `dataset` (an object), `hidden`/`disabled`/... (booleans), `on<event>`
 * (a function: an event listener, not an attribute, so the CSP allows it), anything
 * else as an attribute; null, undefined and false leave it out. Children: nodes,
 * strings (as text), arrays of them; null/undefined/false are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") {
      node.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Remove every child of `node` (then fill it again with el()). */
export function clear(node) {
  node.replaceChildren();
  return node;
}

/** document.getElementById, failing loudly when the page lacks the element. */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node;
}

let announceTimer = null;

/**
 * Say `text` to screen readers through the page's aria-live region #status. Emptied
 * first and written a moment later, so the same message twice is announced twice.
 */
export function announce(text) {
  const region = document.getElementById("status");
  if (!region) return;
  region.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/**
 * A notice box: kind is "info", "warning", "danger" or "success"; `title` bold on
 * its own line, then the paragraphs (strings or nodes).
 */
export function notice(kind, title, ...paragraphs) {
  const role = kind === "danger" || kind === "warning" ? "alert" : null;
  return el(
    "div",
    { class: `notice notice-${kind}`, role },
    title ? el("strong", { class: "notice-title" }, title) : null,
    paragraphs.map((p) => (p instanceof Node ? p : el("p", {}, p))),
  );
}

/** Move focus to `node` (made focusable if it is not), e.g. a heading after a step. */
export function focus(node) {
  if (!node) return;
  if (!node.hasAttribute("tabindex") && !/^(A|BUTTON|INPUT|SELECT|TEXTAREA)$/.test(node.tagName)) {
    node.setAttribute("tabindex", "-1");
  }
  node.focus();
}

const pad = (n) => String(n).padStart(2, "0");

/**
 * A timestamp of the API (RFC 3339, or a Date, or epoch milliseconds) as
 * "2026-12-02 14:05 UTC": one zone for everyone, as in the mails and the audit trail.
 * `seconds: true` adds the seconds. null or undefined gives "—".
 */
export function formatTime(ts, { seconds = false } = {}) {
  if (ts === null || ts === undefined || ts === "") return "—";
  const d = ts instanceof Date ? ts : new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  return `${date} ${time}${seconds ? `:${pad(d.getUTCSeconds())}` : ""} UTC`;
}

/** <html data-state>: "ready" once the first render is done, "error" on a fatal one. */
export function setState(state) {
  document.documentElement.dataset.state = state;
}
