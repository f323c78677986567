"""JSON of the domain's models, with the API's URLs: the only place that knows them."""

from __future__ import annotations

from typing import Any

from domain.clock import rfc3339_millis
from domain.models import Regeneration

REGENERATIONS_PATH = "/v1/me/backup-codes/regenerations"


def _ts(moment: Any) -> str | None:
    return None if moment is None else rfc3339_millis(moment)


def regeneration_path(regeneration_id: str) -> str:
    return f"{REGENERATIONS_PATH}/{regeneration_id}"


def regeneration(reg: Regeneration) -> dict[str, Any]:
    """API.md's Regeneration JSON."""
    path = regeneration_path(reg.id)
    return {
        "id": reg.id,
        "status": reg.status,
        "reason": reg.reason,
        "failure": reg.failure,
        "created_at": _ts(reg.created_at),
        "completed_at": _ts(reg.completed_at),
        "expires_at": _ts(reg.expires_at),
        "code_count": reg.code_count,
        "links": {"self": path, "sheet": f"{path}/sheet"},
    }
