"""Wiring for the processes: a Celery app, its tasks and the publisher, from Settings.

`make_publisher` is what the API calls (api.app.create_app); `build_worker` and
`build_beat` are what `mfa-codes worker` and `mfa-codes beat` run. Nothing here
connects to the database or the broker: that happens on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from infra.services import Services
from infra.settings import Settings
from workers.app import make_celery
from workers.publish import Publisher
from workers.schedule import install_schedule
from workers.tasks import RegisteredTasks, register_tasks


def make_publisher(
    services: Services, celery_app: Celery | None = None, *, batch_marks: bool = False
) -> Publisher:
    """A Publisher installed as an after-commit hook (`services.after_commit`): every unit of work
    publishes its outbox rows once it has committed. Its `ping()` is the broker
    check of /readyz. The API batches the marking of sent rows (`batch_marks`)."""
    publisher = Publisher(
        celery_app or make_celery(services.settings), services, batch_marks=batch_marks
    )
    publisher.install()
    return publisher


@dataclass
class WorkerRuntime:
    settings: Settings
    services: Services
    celery: Celery
    publisher: Publisher
    tasks: RegisteredTasks

    def close(self) -> None:
        self.publisher.uninstall()
        self.celery.close()  # its pool of broker connections
        self.services.close()


def build_worker(settings: Settings, services: Services | None = None) -> WorkerRuntime:
    """The Celery app with every task registered on one Services. The publisher is
    installed too, so any outbox row a task writes goes out after its commit."""
    services = services or Services.build(settings)
    celery_app = make_celery(settings)
    publisher = make_publisher(services, celery_app)
    tasks = register_tasks(celery_app, services, publisher)
    return WorkerRuntime(settings, services, celery_app, publisher, tasks)


def build_beat(settings: Settings) -> Celery:
    """The beat only sends task names to the maintenance queue: it needs no database."""
    celery_app = make_celery(settings)
    install_schedule(celery_app, settings)
    settings.var_dir.mkdir(parents=True, exist_ok=True)  # its schedule file lives there
    return celery_app
