// The policy panel: GET /v1/org/policy into the form; "Review changes" lists what
// would change, and only "Save changes" sends the PUT.

import {
  busy, byId, call, clearProblems, confirmIn, done, fieldError, h, showProblem,
} from "./admin-common.js";

const FIELDS = { code_count: "policy-count", support_contact: "policy-contact" };
let saved = null; // the policy as the service last answered it
const onOff = (value) => (value ? "on" : "off");

function fill(policy) {
  saved = policy;
  byId("policy-enabled").checked = policy.backup_codes_enabled;
  byId("policy-count").value = String(policy.code_count);
  byId("policy-notify").checked = policy.notify_users;
  byId("policy-contact").value = policy.support_contact ?? "";
  // On paper the form is not printed: the policy as saved is, in words.
  byId("policy-summary").replaceChildren(...[
    ["Backup codes", onOff(policy.backup_codes_enabled)],
    ["Codes in each new set", String(policy.code_count)],
    ["Mail to users", onOff(policy.notify_users)],
    ["Support contact", policy.support_contact ?? "none"],
  ].map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))));
}

function wanted() {
  const contact = byId("policy-contact").value.trim();
  return {
    backup_codes_enabled: byId("policy-enabled").checked,
    code_count: Number(byId("policy-count").value),
    notify_users: byId("policy-notify").checked,
    support_contact: contact === "" ? null : contact,
  };
}

const contactText = (value) => (value === null ? "none" : `“${value}”`);

/** [label, before, after] for every field that differs. */
function changes(before, after) {
  const rows = [];
  if (before.backup_codes_enabled !== after.backup_codes_enabled) {
    rows.push(["Backup codes", onOff(before.backup_codes_enabled), onOff(after.backup_codes_enabled)]);
  }
  if (before.code_count !== after.code_count) {
    rows.push(["Codes in each new set", String(before.code_count), String(after.code_count)]);
  }
  if (before.notify_users !== after.notify_users) {
    rows.push(["Mail to users", onOff(before.notify_users), onOff(after.notify_users)]);
  }
  if (before.support_contact !== after.support_contact) {
    rows.push(["Support contact", contactText(before.support_contact), contactText(after.support_contact)]);
  }
  return rows;
}

function changeItem([label, before, after]) {
  return h("li", {},
    h("span", { class: "admin-change-label" }, `${label}: `),
    h("del", {}, before),
    h("span", { class: "admin-change-arrow", "aria-hidden": "true" }, " → "),
    h("span", { class: "visually-hidden" }, " becomes "),
    h("ins", {}, after));
}

function summary(rows) {
  return rows.map(([label, , after]) => `${label} ${after}`).join(", ");
}

export async function load() {
  fill(await call("GET", "/v1/org/policy"));
}

export function wire() {
  const form = byId("policy-form");
  const confirm = byId("policy-confirm");
  const review = byId("policy-review");
  const notice = byId("policy-done");

  form.addEventListener("input", () => {
    notice.hidden = true;
    confirm.hidden = true;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems(byId("policy"));
    notice.hidden = true;
    const next = wanted();
    const count = byId("policy-count").value;
    if (!/^\d+$/.test(count) || next.code_count < 1 || next.code_count > 20) {
      fieldError("policy-count", "Enter a whole number from 1 to 20.");
      return;
    }
    const rows = changes(saved, next);
    if (rows.length === 0) {
      done(notice, "Nothing to save: the policy already reads like this.");
      return;
    }
    byId("policy-changes").replaceChildren(...rows.map(changeItem));
    const go = byId("policy-save");
    const keep = byId("policy-cancel");
    if (!(await confirmIn(confirm, go, keep, review))) return;
    try {
      await busy(go, async () => {
        const answer = await call("PUT", "/v1/org/policy", { body: next });
        fill(answer);
      });
      confirm.hidden = true;
      done(notice, `Policy saved. ${summary(rows)}.`);
    } catch (err) {
      confirm.hidden = true;
      showProblem(byId("policy-error"), err, FIELDS);
      if (!(err.problem && FIELDS[err.problem.field])) review.focus();
    }
  });
}
