"""Every word the mails say, in English, in one place (so they can be translated).

Each kind has a subject and its paragraphs; `{name}` fields are filled in by
domain.notify.mail_compose, which escapes them for the HTML part. No text here
ever names a code, a TOTP value, a secret or a token.
"""

from __future__ import annotations

from domain.notify.mail_rules import MailKind

SUBJECTS: dict[MailKind, str] = {
    MailKind.ENROLLED: "An authenticator was added to your account",
    MailKind.CODES_GENERATED: "New backup codes were created for your account",
    MailKind.CODE_USED: "A backup code was used to sign in to your account",
    MailKind.CODES_REVOKED: "Your backup codes were revoked by an administrator",
    MailKind.MFA_RESET: "Your two-step verification was reset by an administrator",
    MailKind.UNLOCKED: "Your account's sign-in lock was lifted by an administrator",
    MailKind.THROTTLED: "Sign-in to your account is paused after failed attempts",
    MailKind.LOCKED: "Sign-in with your second factor is locked",
    MailKind.ADDRESS_CHANGED: "An email address of your account was changed",
    MailKind.REPUDIATED: "Your account's two-step verification has been locked",
}

# The facts of each kind; fields: when, when_readable, where, set_id, remaining,
# by, until, factor, address_field.
FACTS: dict[MailKind, tuple[str, ...]] = {
    MailKind.ENROLLED: (
        "An authenticator app was confirmed for two-step verification on your account "
        "at {when_readable} ({when}), from {where}.",
    ),
    MailKind.CODES_GENERATED: (
        "A new set of backup codes (set {set_id}) was created for your account at "
        "{when_readable} ({when}), from {where}. Every earlier backup code no longer works.",
    ),
    MailKind.CODE_USED: (
        "A backup code was used to sign in to your account at {when_readable} ({when}), "
        "from {where}.",
        "{remaining} backup codes remain in your set.",
    ),
    MailKind.CODES_REVOKED: (
        "An administrator ({by}) revoked every backup code of your account at "
        "{when_readable} ({when}). Create a new set before you need one.",
    ),
    MailKind.MFA_RESET: (
        "An administrator ({by}) reset two-step verification for your account at "
        "{when_readable} ({when}). Your authenticator and your backup codes were removed, "
        "and you were signed out everywhere; set up two-step verification again.",
    ),
    MailKind.UNLOCKED: (
        "An administrator ({by}) lifted the sign-in throttles and locks of your account at "
        "{when_readable} ({when}).",
    ),
    MailKind.THROTTLED: (
        "After many failed attempts with your {factor}, from one or more places, sign-in "
        "with them is paused until {until_readable} ({until}). It began at "
        "{when_readable} ({when}).",
    ),
    MailKind.LOCKED: (
        "After too many failed attempts with your {factor}, sign-in with them is locked "
        "since {when_readable} ({when}) until an administrator acts.",
    ),
    MailKind.ADDRESS_CHANGED: (
        "The {address_field} of your account, this address, was replaced by another one at "
        "{when_readable} ({when}). Mails about your account no longer come here.",
    ),
    MailKind.REPUDIATED: (
        "As you asked at {when_readable} ({when}), every backup code of your account was "
        "deactivated, every session and token of yours was ended, and your authenticator "
        "is locked until an administrator resets two-step verification.",
        "Ask your administrator to reset it; then set it up again with an authenticator "
        "only you hold.",
    ),
}

REGENERATE = (
    "Only a few backup codes are left: create a new set now, so that you are not left "
    "without a way in."
)

FACTOR_NAMES = {"backup_codes": "backup codes", "totp": "authenticator app"}
ADDRESS_FIELDS = {"email": "email address", "recovery_email": "recovery email address"}

GREETING = "Hello {display_name},"
GREETING_ANONYMOUS = "Hello,"
WHERE_UNKNOWN = "an unknown place"
WHERE = "{ip}"
WHERE_WITH_AGENT = "{ip} ({user_agent})"
BY_UNKNOWN = "unknown"
ORIGIN = "This message comes from the sign-in security service of {org}."
SUPPORT = "Questions? Contact {support}."
REPUDIATION_HEADING = "If this wasn't you"
REPUDIATION = (
    "Open this link within 7 days. It explains what happens and asks you to confirm: "
    "your backup codes are then deactivated, every session is ended and your "
    "authenticator is locked until an administrator resets it."
)
NOT_REPLY = "This is an automatic message. If it was you, there is nothing you need to do."

# The repudiation page (GET /v1/repudiations/{ticket}) and its answer.
PAGE_TITLE = "Was this not you?"
PAGE_EXPLAIN = (
    "If you did not do what the mail told you about, someone else may hold your "
    "password and a second factor. Confirming here will deactivate every backup code of "
    "your account, end every session and token, and lock your authenticator until an "
    "administrator resets two-step verification. Nothing happens until you confirm."
)
PAGE_BUTTON = "Yes, lock my account's two-step verification"
DONE_TITLE = "Your two-step verification is locked"
DONE_EXPLAIN = (
    "Every backup code is deactivated, every session is ended, and your authenticator "
    "is locked. Ask your administrator to reset two-step verification, then set it up "
    "again. A mail confirms this."
)
GONE_TITLE = "This link no longer works"
GONE_EXPLAIN = (
    "The link was used already, or it is older than 7 days. If you still think someone "
    "else is using your account, contact your administrator."
)
