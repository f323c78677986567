// The enter page: a ui-link's ticket (in the fragment, which no server and no Referer
// ever sees) is traded for the session cookie, then the browser goes to the page.
import { announce, byId, el, focus, notice, setState } from "./lib/dom.js";

// Before anything else: the ticket leaves the address bar and this history entry, so
// neither the back button, a bookmark nor a shared screen shows it.
const fragment = location.hash;
history.replaceState(null, "", location.pathname + location.search);

const PAGE_NAMES = {
  "/ui/security": "your security settings",
  "/ui/audit": "the audit trail",
  "/ui/admin": "the administration console",
};

function ticketOf(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const ticket = params.get("ticket");
  return ticket && /^[A-Za-z0-9_-]{16,200}$/.test(ticket) ? ticket : null;
}

function show(kind, title, ...paragraphs) {
  byId("enter-progress").hidden = true;
  const heading = byId("enter-title");
  heading.textContent = title;
  byId("enter-result").replaceChildren(notice(kind, null, ...paragraphs));
  announce(`${title}. ${paragraphs.filter((p) => typeof p === "string").join(" ")}`);
  focus(heading);
}

function refused(status, retryAfter) {
  if (status === 410) {
    return show(
      "warning",
      "This link has already been used or has expired",
      "A sign-in link works once, and only for two minutes.",
      "Go back to your application and open the page from there again: it makes a new link.",
    );
  }
  if (status === 429) {
    const wait = retryAfter ? ` Wait ${retryAfter} seconds, then` : " Wait a minute, then";
    return show(
      "warning",
      "Too many sign-in attempts",
      `${wait} open the page again from your application.`,
    );
  }
  return show(
    "danger",
    "Signing in did not work",
    `The service answered ${status}. Open the page again from your application; if this keeps happening, tell your administrator.`,
  );
}

async function enter() {
  const ticket = ticketOf(fragment);
  if (!ticket) {
    show(
      "info",
      "Open this page from your application",
      "This address signs you in only through the link your application makes for you, which carries a one-time ticket; this one carries none.",
      "Go to your application's security settings and follow the link from there.",
    );
    return;
  }
  let response;
  try {
    response = await fetch("/ui/session", {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ ticket }),
    });
  } catch {
    show(
      "danger",
      "The service could not be reached",
      "Check your connection, then open the page again from your application.",
    );
    return;
  }
  if (!response.ok) {
    const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    refused(response.status, Number.isFinite(retry) ? retry : null);
    return;
  }
  const session = await response.json();
  const target = Object.hasOwn(PAGE_NAMES, session.page) ? session.page : "/ui/security";
  byId("enter-progress").hidden = true;
  const heading = byId("enter-title");
  heading.textContent = "Signed in";
  byId("enter-result").replaceChildren(
    notice(
      "success",
      null,
      el(
        "p",
        {},
        "Signed in as ",
        el("strong", { id: "enter-account" }, session.principal_id),
        ` of ${session.org_name || session.org_id}. Opening ${PAGE_NAMES[target]}…`,
      ),
    ),
  );
  announce(`Signed in as ${session.principal_id}. Opening ${PAGE_NAMES[target]}.`);
  setState("ready");
  // replace(): the enter page does not stay in the history either.
  location.replace(target);
}

enter()
  .then(() => {
    if (document.documentElement.dataset.state === "loading") setState("ready");
  })
  .catch(() => {
    show("danger", "Signing in did not work", "Open the page again from your application.");
    setState("error");
  });
