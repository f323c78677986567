// The words of the security page: event types as a person reads them, and what each
// refusal of a 6-digit code means and what to do next.

const EVENTS = {
  "mfa.enrollment.started": "Authenticator setup started",
  "mfa.enrollment.confirmed": "Authenticator app turned on",
  "mfa.enrollment.failed": "Authenticator setup code not accepted",
  "mfa.totp.accepted": "Authenticator code accepted",
  "mfa.totp.rejected": "Wrong authenticator code",
  "mfa.totp.replayed": "Authenticator code used twice",
  "mfa.reset": "Two-step verification reset by an administrator",
  "backup_codes.regeneration.requested": "New backup codes requested",
  "backup_codes.regeneration.refused": "New backup codes refused",
  "backup_codes.regeneration.started": "New backup codes being made",
  "backup_codes.regeneration.succeeded": "New backup codes made",
  "backup_codes.regeneration.failed": "New backup codes not made",
  "backup_codes.deactivated": "Earlier backup codes turned off",
  "backup_codes.revoked": "Backup codes revoked by an administrator",
  "backup_codes.sheet.rendered": "Backup code sheet prepared",
  "backup_codes.sheet.retrieved": "Backup codes shown",
  "backup_codes.sheet.retrieval_refused": "Backup codes not shown",
  "backup_codes.sheet.expired": "Backup codes expired before they were shown",
  "backup_codes.code.accepted": "Signed in with a backup code",
  "backup_codes.code.rejected": "Wrong backup code",
  "backup_codes.signin.refused": "Backup code sign-in refused",
  "user.lockout.started": "Sign-in attempts paused after wrong codes",
  "user.lockout.ended": "Sign-in pause ended",
  "user.lockout.permanent": "Locked after too many wrong codes",
  "user.lockout.cleared": "Unlocked by an administrator",
  "user.repudiated": "You reported “this wasn’t me”",
  "user.created": "Account created",
  "user.upserted": "Account updated",
  "token.issued": "Signed in to a new session",
  "token.revoked": "Session ended",
};

const OUTCOMES = { success: "Succeeded", failure: "Failed", denied: "Refused" };

export function eventLabel(type, details = {}) {
  // token.issued is both a link to this page being made and the session it opened.
  if (type === "token.issued" && details && details.kind === "ui-link") return "Sign-in link to this page made";
  return EVENTS[type] ?? type;
}

export function outcomeLabel(outcome) {
  return OUTCOMES[outcome] ?? outcome;
}

// "Firefox on Linux" from a user agent string, or the string cut short.
export function deviceLabel(userAgent) {
  if (!userAgent) return "";
  const browsers = [["Edg/", "Edge"], ["Firefox/", "Firefox"], ["Chrome/", "Chrome"], ["Safari/", "Safari"]];
  const systems = [["Android", "Android"], ["iPhone", "iPhone"], ["iPad", "iPad"], ["Windows", "Windows"], ["Mac OS X", "macOS"], ["Linux", "Linux"]];
  const browser = browsers.find(([needle]) => userAgent.includes(needle));
  const system = systems.find(([needle]) => userAgent.includes(needle));
  if (browser && system) return `${browser[1]} on ${system[1]}`;
  if (browser) return browser[1];
  return userAgent.length > 40 ? `${userAgent.slice(0, 39)}…` : userAgent;
}

const WHY_TOTP_FAILED = {
  "invalid-totp": "That code didn’t match. Check that you used the code for this account, and enter the code your app shows now.",
  "totp-replayed": "That code has already been used. Wait for your app to show a new code (they change every 30 seconds), then enter the new one.",
  "too-many-attempts": "Too many wrong codes in a short time. Wait a few minutes, then try again.",
  "backup-codes-disabled": "Your organization has turned backup codes off.",
  "mfa-not-enrolled": "Your authenticator app is no longer set up. Reload the page to set it up again.",
  "processing-failed": "Something went wrong on our side while making your codes. Nothing changed: your earlier codes still work. Please try again.",
};

// Why a regeneration ended `failed`, as its `failure` says.
export function failureMessage(failure) {
  return WHY_TOTP_FAILED[failure] ?? "Your codes could not be made. Please try again.";
}

// The clock time a wait of `seconds` ends at, and roughly how long that is.
export function untilText(until, formatTime) {
  const minutes = Math.max(1, Math.ceil((until.getTime() - Date.now()) / 60000));
  const span = minutes === 1 ? "about a minute" : `about ${minutes} minutes`;
  return `${formatTime(until.toISOString())} (in ${span})`;
}
