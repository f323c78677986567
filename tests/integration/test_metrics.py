"""The metrics: HTTP, regeneration, lockout and sign-in counters, as a scrape of
MFA_API_METRICS_PORT reads them (tests/e2e/test_api_metrics_port.py scrapes the
real port); the API port itself no longer serves /metrics."""

from __future__ import annotations

import re
from wsgiref.validate import WSGIWarning

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infra import metrics as domain_metrics
from infra.settings import Settings
from tests.support.api_world import api_world
from tests.support.codes import WRONG_CODE
from tests.support.polling import await_true


def _scrape() -> str:
    """The exposition text the metrics port serves (same registry, this process)."""
    return generate_latest(domain_metrics.registry()).decode()


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(_scrape()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_route_template_not_by_concrete_path(settings: Settings) -> None:
    with api_world(settings, worker=False) as world:
        org = world.org()
        tok, body = world.enroll(org)
        reg_id = body["regeneration"]["id"]
        before = _samples()
        route = "/v1/me/backup-codes/regenerations/{regeneration_id}"
        for _ in range(3):
            assert (
                world.call("GET", f"/v1/me/backup-codes/regenerations/{reg_id}", tok).status_code
                == 200
            )
        after = _samples()
        key = {"route": route, "method": "GET", "status": "200"}
        assert (
            _value(after, "mfa_http_requests_total", **key)
            - _value(before, "mfa_http_requests_total", **key)
            == 3
        )
        text = _scrape()
        assert reg_id not in text and "alice" not in text and org not in text


def test_metrics_count_regenerations_lockouts_and_signins_once_committed(
    settings: Settings,
) -> None:
    with api_world(settings) as world:
        before = _samples()
        org = world.org()
        tok, body = world.enroll(org)
        world.await_status(tok, body["regeneration"]["id"])
        codes = world.sheet_text(tok, body["regeneration"]["id"])
        service = world.token(org, "front-end", "service")
        verify = "/v1/users/alice/backup-codes/verify"
        assert world.call("POST", verify, service, json={"code": codes[0]}).json["accepted"]
        for n in range(20):  # the user's hourly budget, from 5 sources (none throttled alone)
            wrong = {"code": WRONG_CODE, "client_ip": f"192.0.2.{n % 5 + 1}"}
            assert world.call("POST", verify, service, json=wrong).status_code == 200
        right = {"code": codes[1], "client_ip": "198.51.100.1"}
        assert world.call("POST", verify, service, json=right).status_code == 429
        after = _samples()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("mfa_regenerations_total", outcome="ready") == 1
    assert delta("mfa_backup_code_verifications_total", result="accepted") == 1
    assert delta("mfa_backup_code_verifications_total", result="rejected") == 20
    assert delta("mfa_lockouts_total") == 1
    assert delta("mfa_regeneration_queue_latency_seconds_count") == 1
    assert re.search(
        r"^mfa_http_request_duration_seconds_bucket", "\n".join(name for name, _ in after), re.M
    )


def test_worker_records_task_durations_by_task_name(settings: Settings) -> None:
    from prometheus_client import REGISTRY

    from workers import metrics as worker_metrics

    worker_metrics.connect()
    name = "mfa_task_duration_seconds_count"
    labels = {"task": "regeneration.process", "state": "SUCCESS"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    with api_world(settings) as world:
        org = world.org()
        tok, body = world.enroll(org)
        world.await_status(tok, body["regeneration"]["id"])
        # The status is committed inside the task; its postrun signal follows.
        await_true(
            lambda: (REGISTRY.get_sample_value(name, labels) or 0.0) != before,
            10,
            "a task duration recorded",
            every=0.02,
        )
    assert (REGISTRY.get_sample_value(name, labels) or 0.0) - before == 1


def test_events_of_a_savepoint_count_once_at_the_outer_commit_and_never_if_rolled_back(
    settings: Settings,
) -> None:
    from prometheus_client import REGISTRY

    from domain import accounts, audit
    from domain.audit.types import EventType
    from infra.services import Services

    services = Services.build(settings)
    org = "metrics-savepoints"
    name = "mfa_audit_events_total"
    kept = {"type": EventType.AUDIT_VERIFIED, "outcome": "success"}
    lost = {"type": EventType.AUDIT_READ, "outcome": "success"}
    before = {
        k: REGISTRY.get_sample_value(name, v) or 0.0 for k, v in (("kept", kept), ("lost", lost))
    }
    try:
        with services.unit_of_work() as uow:
            accounts.create_org(uow, org, audit.CLI)
        with services.unit_of_work() as uow:
            with uow.savepoint():
                audit.append(uow, org, EventType.AUDIT_VERIFIED, "success", audit.CLI)
            # Released, not committed: nothing counted yet.
            assert (REGISTRY.get_sample_value(name, kept) or 0.0) == before["kept"]
            try:
                with uow.savepoint():
                    audit.append(uow, org, EventType.AUDIT_READ, "success", audit.CLI)
                    raise RuntimeError("roll this savepoint back")
            except RuntimeError:
                pass
    finally:
        services.close()
    assert (REGISTRY.get_sample_value(name, kept) or 0.0) - before["kept"] == 1
    assert (REGISTRY.get_sample_value(name, lost) or 0.0) == before["lost"]


def test_invented_methods_share_one_label(settings: Settings) -> None:
    with api_world(settings, worker=False) as world:
        for method in ("FOOBAR1", "FOOBAR2"):
            # The test client's WSGI validator warns about the method; a server does not.
            with pytest.warns(WSGIWarning):
                world.client.simulate_request(method, "/nowhere")
        text = _scrape()
    assert "FOOBAR" not in text
    assert re.search(r'mfa_http_requests_total\{[^}]*method="other"', text)


def test_the_api_port_serves_no_metrics(settings: Settings) -> None:
    with api_world(settings, worker=False) as world:
        got = world.call("GET", "/metrics")
    assert got.status_code == 404
    assert "mfa_http_requests" not in got.text
