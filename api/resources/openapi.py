"""GET /openapi.json: the contract kept in api/openapi.yaml, served as JSON."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import falcon
import yaml

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.yaml"


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@cache
def _encoded() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


class OpenApiDocument:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = _encoded()


def register(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    app.add_route("/openapi.json", OpenApiDocument())
