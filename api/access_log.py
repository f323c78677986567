"""gunicorn's access log with the repudiation ticket taken out of the path.

The path of `/v1/repudiations/{ticket}` is a credential; every atom that can hold
the path (the path, the request line, the raw URI) is written redacted
(infra.logs.redact). deploy/gunicorn.conf.py names this class as logger_class;
the waitress worker writes its lines through it too.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from infra.logs import redact

_PATH_ATOMS = ("U", "r", "{raw_uri}e", "{path_info}e", "{request_uri}e")


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no types
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in _PATH_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        return atoms
