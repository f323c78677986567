"""The Celery app's configuration, the beat schedule and the process defaults: no
broker, no database (building an app and registering its tasks connects to nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from cli import processes as proc
from infra.services import Services
from infra.settings import Settings
from tests.support.settings import make_settings
from workers import app as celery_config
from workers import folder_broker
from workers.app import (
    TASK_CHECKPOINT,
    TASK_EXPIRE_SHEETS,
    TASK_PROCESS,
    TASK_PURGE,
    TASK_REPUBLISH_STALE,
    TASK_SEND_MAIL,
    maintenance_queue,
    make_celery,
    regeneration_queue,
)
from workers.schedule import EXPIRE_EVERY, REPUBLISH_EVERY, beat_schedule, install_schedule
from workers.tasks import register_tasks

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/15"
ALL_TASKS = (TASK_PROCESS, TASK_REPUBLISH_STALE, TASK_EXPIRE_SHEETS, TASK_CHECKPOINT, TASK_PURGE)


@pytest.fixture
def amqp_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, MFA_BROKER_URL=AMQP)


@pytest.fixture
def app(amqp_settings: Settings) -> Celery:
    return make_celery(amqp_settings)


def test_messages_are_acknowledged_after_the_task_and_given_back_when_a_worker_dies(
    app: Celery,
) -> None:
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_only_json_crosses_the_broker(app: Celery) -> None:
    assert app.conf.task_serializer == "json"
    assert app.conf.event_serializer == "json"
    assert list(app.conf.accept_content) == ["json"]


def test_there_is_no_result_backend(app: Celery) -> None:
    assert app.conf.result_backend is None
    assert app.conf.task_ignore_result is True
    assert app.conf.task_store_errors_even_if_ignored is False


def test_a_hard_time_limit_backs_the_soft_one(app: Celery) -> None:
    assert 0 < app.conf.task_soft_time_limit < app.conf.task_time_limit


def test_tasks_are_registered_under_their_explicit_names(
    app: Celery, amqp_settings: Settings
) -> None:
    services = Services.build(amqp_settings)
    try:
        registered = register_tasks(app, services)
        for name, task in zip(
            ALL_TASKS,
            (
                registered.process,
                registered.republish_stale,
                registered.expire_sheets,
                registered.checkpoint,
                registered.purge,
            ),
            strict=True,
        ):
            assert task.name == name
            assert app.tasks[name].name == name and app.tasks[name].app is app
    finally:
        services.close()


def test_the_three_queues_are_separate_and_carry_the_prefix(
    app: Celery, amqp_settings: Settings
) -> None:
    regeneration, maintenance = regeneration_queue(amqp_settings), maintenance_queue(amqp_settings)
    deliveries = celery_config.deliveries_queue(amqp_settings)
    assert len({regeneration, maintenance, deliveries}) == 3
    for name in (regeneration, maintenance, deliveries):
        assert name.startswith(amqp_settings.queue_prefix + ".")
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == {regeneration, maintenance, deliveries}
    exchanges = {queues[name].exchange.name for name in (regeneration, maintenance, deliveries)}
    assert len(exchanges) == 3
    assert app.conf.task_default_queue == maintenance
    assert app.conf.task_create_missing_queues is False


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (TASK_PROCESS, "regeneration"),
        (TASK_REPUBLISH_STALE, "maintenance"),
        (TASK_EXPIRE_SHEETS, "maintenance"),
        (TASK_CHECKPOINT, "maintenance"),
        (TASK_PURGE, "maintenance"),
        (TASK_SEND_MAIL, "deliveries"),
        ("webhook.deliver", "deliveries"),
        ("something.else", "maintenance"),
    ],
)
def test_routes_send_each_task_to_its_queue(
    app: Celery, amqp_settings: Settings, task: str, expected: str
) -> None:
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == f"{amqp_settings.queue_prefix}.{expected}"
    assert celery_config.queue_for(amqp_settings, task) == route["queue"].name


def test_the_beat_schedule_runs_the_maintenance_on_the_maintenance_queue(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, MFA_CHECKPOINT_INTERVAL_SECONDS="123", MFA_PURGE_INTERVAL_SECONDS="1800"
    )
    schedule = beat_schedule(settings)
    assert {entry["task"] for entry in schedule.values()} == {
        TASK_REPUBLISH_STALE,
        TASK_EXPIRE_SHEETS,
        TASK_CHECKPOINT,
        TASK_PURGE,
    }
    every = {entry["task"]: entry["schedule"] for entry in schedule.values()}
    assert every == {
        TASK_REPUBLISH_STALE: REPUBLISH_EVERY,
        TASK_EXPIRE_SHEETS: EXPIRE_EVERY,
        TASK_CHECKPOINT: 123.0,
        TASK_PURGE: 1800.0,
    }
    assert 5 <= REPUBLISH_EVERY <= 15 and 15 <= EXPIRE_EVERY <= 60
    for entry in schedule.values():
        assert entry["options"]["queue"] == maintenance_queue(settings)
        # A sweep nobody ran within its period is dropped, not piled up.
        assert entry["options"]["expires"] == entry["schedule"]


def test_install_schedule_puts_it_on_the_app_and_its_file_under_var(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = make_celery(settings)
    install_schedule(app, settings)
    assert app.conf.beat_schedule == beat_schedule(settings)
    assert Path(app.conf.beat_schedule_filename).parent == settings.var_dir


def test_rabbitmq_publishes_are_confirmed(app: Celery) -> None:
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.broker_url == AMQP


def test_redis_redelivers_only_long_after_the_hard_time_limit(tmp_path: Path) -> None:
    app = make_celery(make_settings(tmp_path, MFA_BROKER_URL=REDIS))
    timeout = app.conf.broker_transport_options["visibility_timeout"]
    assert timeout > app.conf.task_time_limit
    assert timeout == celery_config.REDIS_VISIBILITY_TIMEOUT


def test_a_silent_redis_cannot_hold_a_publish_longer_than_its_socket_timeout(
    tmp_path: Path,
) -> None:
    options = make_celery(make_settings(tmp_path, MFA_BROKER_URL=REDIS)).conf
    transport = options.broker_transport_options
    assert transport["socket_timeout"] == transport["socket_connect_timeout"] <= 2.0


def test_the_embedded_broker_keeps_its_folders_under_var(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = make_celery(settings)
    options = app.conf.broker_transport_options
    var = settings.var_dir.resolve()
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        folder = Path(options[key]).resolve()
        assert folder.is_relative_to(var), key
        assert folder.is_dir(), key
    assert options["data_folder_in"] == options["data_folder_out"]
    assert options["store_processed"] is False
    assert app.conf.broker_url.startswith("filesystem://")
    # Broadcast queues would pile up in the folder, one per dead worker.
    assert app.conf.worker_enable_remote_control is False


def test_remote_control_stays_on_with_a_real_broker(app: Celery) -> None:
    assert app.conf.worker_enable_remote_control is True


def test_each_app_is_independent(tmp_path: Path) -> None:
    first = make_celery(make_settings(tmp_path / "a", MFA_BROKER_URL=AMQP))
    second = make_celery(make_settings(tmp_path / "b", MFA_BROKER_URL=AMQP))
    assert first.conf.task_default_queue != second.conf.task_default_queue


# --- process defaults (cli/processes.py) ---------------------------------------


def test_the_worker_pool_is_prefork_on_deployments_and_threads_when_embedded(
    tmp_path: Path,
) -> None:
    deployed = make_settings(
        tmp_path / "d",
        MFA_DATABASE_URL="postgresql+psycopg://u@db/mfa",
        MFA_BROKER_URL=AMQP,
        MFA_AUDIT_SIGNING_KEY="A" * 43 + "=",
    )
    assert proc.default_pool(deployed) == "prefork"
    assert proc.default_concurrency(deployed, "prefork") is None
    embedded = make_settings(tmp_path / "e")
    assert proc.default_pool(embedded) == "threads"
    assert proc.default_concurrency(embedded, "threads") == proc.SQLITE_CONCURRENCY
    assert proc.default_concurrency(embedded, "solo") == 1
    assert proc.queue_names(embedded, ()) == [
        regeneration_queue(embedded),
        maintenance_queue(embedded),
        celery_config.deliveries_queue(embedded),
    ]
    assert proc.queue_names(embedded, ("maintenance",)) == [maintenance_queue(embedded)]


def test_run_starts_a_delivery_worker_beside_the_regeneration_worker() -> None:
    children = {c.name: c.argv for c in proc.run_children("127.0.0.1", 8000)}
    assert set(children) == {"worker", "deliveries", "beat", "api"}
    worker, deliveries = children["worker"], children["deliveries"]
    assert "deliveries" not in worker and "regeneration" in worker
    queues = [deliveries[i + 1] for i, word in enumerate(deliveries) if word == "-Q"]
    assert queues == ["deliveries"]


def test_serve_binds_to_the_options_then_mfa_bind_then_the_images_config(
    tmp_path: Path,
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "gunicorn.conf.py").write_text("bind = '0.0.0.0:8000'\n")
    argv = proc.gunicorn_argv(None, None, None, {}, image)
    assert argv[-1] == "api.wsgi:application"
    assert argv[argv.index("-c") + 1] == str(image / "gunicorn.conf.py")
    assert "--bind" not in argv  # the image's config decides: every interface

    argv = proc.gunicorn_argv("::1", 9000, 3, {"MFA_BIND": "10.0.0.1:1"}, image)
    assert argv[argv.index("--bind") + 1] == "[::1]:9000"
    assert argv[argv.index("--workers") + 1] == "3"
    assert proc.resolve_bind(None, None, {"MFA_BIND": "10.0.0.1:1"}, None, image) == "10.0.0.1:1"
    # Elsewhere (a checkout, a plain install) only the loopback, unless asked.
    assert proc.resolve_bind(None, None, {}, None, tmp_path) == "127.0.0.1:8000"
    assert proc.resolve_bind(None, 8001, {}, None, tmp_path) == "127.0.0.1:8001"


def test_the_embedded_broker_is_the_atomic_folder_transport(tmp_path: Path) -> None:
    app = make_celery(make_settings(tmp_path))
    with app.connection_for_write() as conn:
        assert isinstance(conn.default_channel, folder_broker.Channel)
    options = app.conf.broker_transport_options
    queue_dir = Path(options["data_folder_in"])
    for key in ("claim_folder", "quarantine_folder"):
        # A claim is a rename: it must stay on the queue's file system (var/broker/).
        assert Path(options[key]).parent == queue_dir.parent, key
