"""The trail's export as a download: a plain link (the audit page's) cannot set `Accept`,
so `format=csv|ndjson` chooses the streamed form, and every streamed answer names its
file in `Content-Disposition`.

The real app on embedded SQLite, without a worker (nothing here needs one).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from domain.audit.types import EventType
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.settings import make_settings

FILENAME = re.compile(r'^attachment; filename="audit-([a-z0-9_.-]+)-\d{8}T\d{6}Z\.(csv|ndjson)"$')


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path_factory.mktemp("audit-export"))
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        yield built


@dataclass(frozen=True)
class Trail:
    org: str
    auditor: str


@pytest.fixture(scope="module")
def trail(world: ApiWorld) -> Trail:
    org = world.org()
    for name in ("alice", "bob"):
        world.user(org, name)
        world.token(org, name, "user")  # token.issued about each user
    return Trail(org, world.token(org, "security", "auditor"))


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_format_streams_the_filtered_selection_as_a_named_attachment(
    world: ApiWorld, trail: Trail, fmt: str
) -> None:
    got = world.call(
        "GET",
        "/v1/audit/events",
        trail.auditor,
        query_string=f"format={fmt}&user_id=alice&type=token.*",
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},  # a browser's link
    )
    assert got.status_code == 200, got.text
    media = {"csv": "text/csv", "ndjson": "application/x-ndjson"}[fmt]
    assert got.headers["Content-Type"].split(";")[0] == media
    match = FILENAME.match(got.headers["Content-Disposition"])
    assert match and match.group(1) == trail.org and match.group(2) == fmt
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(got.text)))
    else:
        rows = [json.loads(line) for line in got.text.splitlines()]
    assert [r["type"] for r in rows] == [EventType.TOKEN_ISSUED]
    assert {r["user_id"] for r in rows} == {"alice"}


def test_accept_still_chooses_and_names_the_file(world: ApiWorld, trail: Trail) -> None:
    got = world.call(
        "GET", "/v1/audit/events", trail.auditor, headers={"Accept": "application/x-ndjson"}
    )
    assert got.status_code == 200
    match = FILENAME.match(got.headers["Content-Disposition"])
    assert match and match.group(2) == "ndjson"


def test_the_json_page_is_no_attachment(world: ApiWorld, trail: Trail) -> None:
    got = world.call("GET", "/v1/audit/events", trail.auditor, query_string="limit=1")
    assert got.status_code == 200
    assert "Content-Disposition" not in got.headers


@pytest.mark.parametrize("value", ["json", "pdf", "CSV"])
def test_another_format_is_refused_naming_the_field(
    world: ApiWorld, trail: Trail, value: str
) -> None:
    got = world.call("GET", "/v1/audit/events", trail.auditor, query_string=f"format={value}")
    assert got.status_code == 422, got.text
    assert got.json["field"] == "format"


def test_format_given_twice_is_refused(world: ApiWorld, trail: Trail) -> None:
    got = world.call(
        "GET", "/v1/audit/events", trail.auditor, query_string="format=csv&format=ndjson"
    )
    assert got.status_code == 422, got.text
    assert got.json["field"] == "format"
