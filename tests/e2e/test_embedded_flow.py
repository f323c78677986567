"""The whole flow as a person runs it: `mfa-codes run` as a subprocess in an empty
directory, the CLI for accounts and tokens, plain HTTP for the rest, SIGINT to stop.

enrollment -> first sheet (PDF) -> a code of it spent -> regeneration -> sheet
exactly once (text form, then 410) -> old codes refused, new accepted once ->
SIGINT stops the API, the worker and the scheduler, with exit 0 and no child left
(to `run` alone, and as a terminal's Ctrl-C sends it, to the whole group).
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pyotp
import pytest
from pypdf import PdfReader

from tests.e2e.service import assert_stopped, interrupt, running
from tests.support.codes import CODE_RE
from tests.support.leaks import leaked

pytestmark = pytest.mark.slow


def _pdf_codes(pdf: bytes) -> list[str]:
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return CODE_RE.findall(text)


# --- the tests --------------------------------------------------------------------------


def test_enroll_regenerate_fetch_once_and_old_codes_refused(tmp_path: Path) -> None:
    with running(tmp_path) as svc:
        anonymous = svc.call("GET", "/v1/me/mfa")
        assert anonymous.status == 401
        assert anonymous.headers["Content-Type"].startswith("application/problem+json")
        assert anonymous.headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert anonymous.headers.get("X-Request-Id")

        svc.cli("org", "create", "acme")
        svc.cli("user", "create", "acme", "alice", "--email", "alice@example.com")
        user = svc.issue_token("acme", "alice", "user")
        frontend = svc.issue_token("acme", "frontend", "service")

        # enrollment: the secret once, then a code from it confirms
        started = svc.call("POST", "/v1/me/mfa/enrollment", user)
        assert started.status == 201, started.body
        assert started.headers.get("Cache-Control") == "no-store"
        secret = started.json()["secret"]
        assert started.json()["otpauth_uri"].startswith("otpauth://totp/")
        svc.seen.add(secret)
        totp = pyotp.TOTP(secret)
        confirm_code = totp.now()
        confirmed = svc.call("POST", "/v1/me/mfa/enrollment/confirm", user, {"totp": confirm_code})
        assert confirmed.status == 201, confirmed.body
        first = confirmed.json()["regeneration"]
        assert first["reason"] == "enrollment" and first["code_count"] == 5
        assert svc.await_finished(user, first["id"])["status"] == "ready"

        # the first sheet as the printable PDF (the default)
        pdf = svc.call("GET", first["links"]["sheet"], user)
        assert pdf.status == 200, pdf.body
        assert pdf.headers["Content-Type"].startswith("application/pdf")
        assert pdf.headers.get("Cache-Control") == "no-store"
        assert re.search(
            r'filename="backup-codes-\d{4}-\d{2}-\d{2}\.pdf"', pdf.headers["Content-Disposition"]
        )
        first_codes = _pdf_codes(pdf.body)
        assert len(set(first_codes)) == 5, first_codes
        svc.seen.update(first_codes)

        verify = "/v1/users/alice/backup-codes/verify"
        spent = svc.call("POST", verify, frontend, {"code": first_codes[0]})
        assert spent.json() == {"accepted": True, "mistyped": False, "remaining": 4, "low": False}

        # regeneration with the next time step's code (the confirmed one is spent)
        next_code = totp.at(time.time() + 30)
        svc.seen.update({confirm_code, next_code})
        regen = svc.call("POST", "/v1/me/backup-codes/regenerations", user, {"totp": next_code})
        assert regen.status == 202, regen.body
        location = regen.headers["Location"]
        assert location == f"/v1/me/backup-codes/regenerations/{regen.json()['id']}"
        assert svc.await_finished(user, regen.json()["id"])["status"] == "ready"

        # its sheet exactly once: the text form, then 410 whatever the format
        text = svc.call("GET", location + "/sheet", user, accept="text/plain")
        assert text.status == 200, text.body
        new_codes = [line.strip() for line in text.body.decode().splitlines() if line.strip()]
        assert len(new_codes) == 5 and all(CODE_RE.fullmatch(c) for c in new_codes), new_codes
        assert not set(new_codes) & set(first_codes)
        svc.seen.update(new_codes)
        for accept in ("application/pdf", "text/plain"):
            again = svc.call("GET", location + "/sheet", user, accept=accept)
            assert again.status == 410 and again.json()["type"] == "/problems/sheet-gone"

        # old codes refused, a new one accepted in any case and without its separator, once
        old = svc.call("POST", verify, frontend, {"code": first_codes[1]})
        assert old.status == 200 and old.json()["accepted"] is False
        loose = f"  {new_codes[0].lower().replace('-', '')} "
        new = svc.call("POST", verify, frontend, {"code": loose})
        assert new.status == 200 and new.json() == {
            "accepted": True,
            "mistyped": False,
            "remaining": 4,
            "low": False,
        }
        reused = svc.call("POST", verify, frontend, {"code": new_codes[0]})
        assert reused.json()["accepted"] is False

        status = svc.call("GET", "/v1/me/mfa", user).json()
        assert status["enrolled"] is True
        assert status["backup_codes"]["remaining"] == 4 and status["backup_codes"]["total"] == 5
        svc.cli("audit", "verify", "--org", "acme")  # exit 0: the chain is intact

        # `kill -INT` of the supervisor alone: it must stop the API, worker and beat itself.
        assert_stopped(svc, *interrupt(svc, whole_group=False))
        assert leaked(svc.log.read_text(), svc.seen) == []


def test_ctrl_c_at_a_terminal_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C: SIGINT to the whole foreground group, children included, after the API
    has served requests that published work (the state in which workers have hung)."""
    with running(tmp_path) as svc:
        svc.cli("org", "create", "acme")
        user, confirmed = svc.enroll("acme", "alice")
        svc.await_finished(user, confirmed["regeneration"]["id"])
        assert_stopped(svc, *interrupt(svc, whole_group=True))
