// The users panel: one user looked up by id (GET /v1/users/{id}), its MFA state,
// and the three administrator actions, the destructive two confirmed in the page.

import {
  announce, badge, busy, byId, call, clearProblems, confirmIn, done, fieldError, h,
  segment, showProblem, timeCell,
} from "./admin-common.js";

let current = null; // the user id shown

const ACTIONS = {
  "user-revoke": {
    title: "Revoke every backup code of this user?",
    text: "Their active codes stop working at once and a sheet they have not fetched yet is deleted. They sign in with their authenticator and regenerate.",
    go: "Revoke codes",
    request: (id) => ["POST", `/v1/users/${segment(id)}/backup-codes/revocation`],
    said: (id) => `Backup codes of ${id} revoked.`,
  },
  "user-reset": {
    title: "Reset this user's MFA?",
    text: "Their authenticator and every backup code are removed, every token and browser session of theirs is revoked, and limits are cleared. They must enroll again.",
    go: "Reset MFA",
    request: (id) => ["DELETE", `/v1/users/${segment(id)}/mfa`],
    said: (id) => `MFA of ${id} reset; the user enrolls again.`,
  },
  "user-unlock": {
    request: (id) => ["POST", `/v1/users/${segment(id)}/mfa/unlock`],
    said: (id) => `${id} unlocked: throttles and locks of both factors cleared.`,
  },
};

// A term above its value, grouped so the base's .facts grid keeps them together.
function fact(term, ...value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, ...value));
}

function limitsOf(limits) {
  const parts = [];
  if (limits.totp_locked) parts.push(badge("Authenticator locked", "danger"));
  if (limits.backup_codes_locked) parts.push(badge("Backup codes locked", "danger"));
  if (limits.totp_throttled_until) {
    parts.push(badge("Authenticator throttled", "warning"), " until ", timeCell(limits.totp_throttled_until));
  }
  if (parts.length === 0) parts.push(badge("None", "ok"));
  return parts;
}

function codesOf(mfa) {
  if (!mfa.backup_codes_enabled) return ["Turned off by the policy"];
  const set = mfa.backup_codes;
  if (!set) {
    return [mfa.last_set_expired_unseen ? "None: the last set was never fetched and is void" : "None"];
  }
  const left = `${set.remaining} of ${set.total} left`;
  return [
    set.low ? badge(left, "warning") : left,
    " · set ", h("span", { class: "mono" }, set.set_id),
    " · generated ", timeCell(set.generated_at),
    " · last used ", timeCell(set.last_used_at),
  ];
}

function render(user) {
  const mfa = user.mfa;
  current = user.user_id;
  byId("user-result-id").textContent = user.user_id;
  const facts = [
    fact("Enrolled", mfa.enrolled ? badge("Yes", "ok") : badge("No", "neutral"),
      mfa.enrolled && mfa.enrolled_at ? " since " : "", mfa.enrolled_at ? timeCell(mfa.enrolled_at) : ""),
    fact("Backup codes", ...codesOf(mfa)),
    fact("Locks", ...limitsOf(mfa.limits)),
  ];
  if (user.display_name) facts.push(fact("Name", user.display_name));
  if (user.email) facts.push(fact("Mail", user.email));
  byId("user-facts").replaceChildren(...facts);
  byId("user-revoke").disabled = !mfa.backup_codes;
  byId("user-reset").disabled = !mfa.enrolled;
  byId("user-result").hidden = false;
}

async function lookup(id) {
  render(await call("GET", `/v1/users/${segment(id)}`));
}

async function act(button) {
  const action = ACTIONS[button.id];
  const id = current;
  const confirm = byId("user-confirm");
  clearProblems(byId("user-result"));
  byId("user-done").hidden = true;
  if (action.title) {
    byId("user-confirm-title").textContent = action.title;
    byId("user-confirm-text").textContent = action.text;
    const go = byId("user-confirm-go");
    go.textContent = action.go;
    if (!(await confirmIn(confirm, go, byId("user-confirm-cancel"), button))) return;
  }
  try {
    const [method, path] = action.request(id);
    await busy(button, () => call(method, path));
    await lookup(id); // after busy(), so what the new state disables stays disabled
    confirm.hidden = true;
    done(byId("user-done"), action.said(id));
  } catch (err) {
    confirm.hidden = true;
    showProblem(byId("user-action-error"), err);
    button.focus();
  }
}

export function wire() {
  byId("user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearProblems(byId("users"));
    byId("user-done").hidden = true;
    byId("user-confirm").hidden = true;
    const id = byId("user-id").value.trim();
    if (id === "") {
      fieldError("user-id", "Enter the user's id.");
      return;
    }
    const button = byId("user-lookup");
    try {
      await busy(button, () => lookup(id));
      byId("user-result").focus();
      announce(`User ${id} shown.`);
    } catch (err) {
      byId("user-result").hidden = true;
      current = null;
      if (err.status === 404) {
        fieldError("user-id", `No user with the id “${id}” in this organization.`);
      } else {
        showProblem(byId("user-id-error"), err);
        byId("user-id").focus();
      }
    }
  });
  for (const id of Object.keys(ACTIONS)) {
    const button = byId(id);
    button.addEventListener("click", () => act(button));
  }
}
