// The administrator's console (/ui/admin): policy, users, tokens, webhooks. Each
// panel lives in lib/admin-*.js; this module signs the page in and loads them.

import { mountChrome } from "./lib/session.js";
import { byId, describe } from "./lib/admin-common.js";
import * as policy from "./lib/admin-policy.js";
import * as users from "./lib/admin-users.js";
import * as tokens from "./lib/admin-tokens.js";
import * as webhooks from "./lib/admin-webhooks.js";

const PANELS = [policy, users, tokens, webhooks];

async function start() {
  await mountChrome();
  for (const panel of PANELS) panel.wire();
  const loads = await Promise.allSettled([policy.load(), tokens.load(), webhooks.load()]);
  const failed = loads.filter((r) => r.status === "rejected");
  if (failed.length > 0) {
    const notice = byId("admin-load-error");
    notice.textContent = `Part of the page could not be loaded: ${describe(failed[0].reason)}`;
    notice.hidden = false;
    document.documentElement.dataset.state = "error";
    return;
  }
  document.documentElement.dataset.state = "ready";
}

start().catch(() => {
  document.documentElement.dataset.state = "error";
});
