// The chain's verification state (GET /v1/audit/verification), shown at the top of the
// audit page: intact, or broken at the first bad seq, with the last signed checkpoint.
// Every value goes in with textContent: the reason may quote recorded data.

import { formatUtc, groupDigits } from "./audit-text.js";

const $ = (id) => document.getElementById(id);

function show(node, visible) {
  node.hidden = !visible;
}

/** The panel while a verification runs. */
export function renderChecking() {
  $("chain").dataset.verdict = "checking";
  $("chain-verdict").textContent = "Verifying the chain…";
  // aria-disabled, not disabled: the button keeps the focus of whoever pressed it.
  $("chain-recheck").setAttribute("aria-disabled", "true");
}

/** The panel for a verification answer; returns the sentence to announce. */
export function renderVerification(result) {
  const section = $("chain");
  const verdict = $("chain-verdict");
  const reason = $("chain-reason");
  $("chain-recheck").removeAttribute("aria-disabled");
  let sentence;
  if (result.ok) {
    section.dataset.verdict = "ok";
    sentence = `Chain intact: all ${groupDigits(result.events_checked)} events verify.`;
  } else {
    section.dataset.verdict = "broken";
    sentence =
      result.first_bad_seq === null
        ? "Chain verification failed."
        : `Chain broken: the first bad event is seq ${result.first_bad_seq}.`;
  }
  verdict.textContent = sentence;
  reason.textContent = result.reason ? capitalise(result.reason) : "";
  show(reason, Boolean(result.reason));

  $("chain-checked").textContent = groupDigits(result.events_checked);
  const head = result.head;
  $("chain-head-seq").textContent = head ? `seq ${head.seq}` : "no events yet";
  $("chain-head-hash").textContent = head ? head.hash : "";
  show($("chain-head-hash"), Boolean(head));
  const cp = result.checkpoint;
  $("chain-checkpoint").textContent = cp
    ? `seq ${cp.seq}, signed ${formatUtc(cp.signed_at)} with key ${cp.key_id}`
    : result.ok
      ? "none yet"
      : "none verified before the break";
  $("chain-unsigned").textContent =
    result.unsigned_events === 1 ? "1 event" : `${groupDigits(result.unsigned_events)} events`;
  show($("chain-facts"), true);
  return sentence;
}

/** The panel when the verification could not be asked for. */
export function renderUnverified(message) {
  $("chain").dataset.verdict = "unknown";
  $("chain-verdict").textContent = "The chain could not be verified just now.";
  $("chain-reason").textContent = message;
  show($("chain-reason"), true);
  $("chain-recheck").removeAttribute("aria-disabled");
}

function capitalise(text) {
  const trimmed = text.endsWith(".") ? text : `${text}.`;
  return trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
}
