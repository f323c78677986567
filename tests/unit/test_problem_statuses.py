"""Every problem slug the domain raises has its HTTP status in api/errors.py's one table."""

from __future__ import annotations

from api.errors import STATUS_OF_SLUG
from domain import errors


def _subclasses(cls: type[errors.DomainError]) -> list[type[errors.DomainError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_domain_error_has_a_status_in_the_table() -> None:
    unmapped = [
        c.__name__
        for c in [errors.DomainError, *_subclasses(errors.DomainError)]
        if c.slug not in STATUS_OF_SLUG
    ]
    assert unmapped == []


def test_the_table_names_no_slug_the_domain_does_not_raise() -> None:
    slugs = {c.slug for c in [errors.DomainError, *_subclasses(errors.DomainError)]}
    assert set(STATUS_OF_SLUG) == slugs


def test_domain_errors_carry_no_http_status() -> None:
    assert [c.__name__ for c in _subclasses(errors.DomainError) if hasattr(c, "status")] == []


def test_the_refusals_the_budget_counts_are_the_401_403_and_404_answers() -> None:
    counted = {c.slug for c in errors.BUDGETED_REFUSALS}
    answered = {slug for slug, status in STATUS_OF_SLUG.items() if status in (401, 403, 404)}
    assert counted == answered
