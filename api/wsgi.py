"""The WSGI entry point for gunicorn: `gunicorn api.wsgi:application`."""

from __future__ import annotations

from api.app import create_app
from infra import logs
from infra.settings import Settings

settings = Settings.from_env()
logs.configure(settings.log_level, as_json=settings.log_json)
application = create_app(settings)
