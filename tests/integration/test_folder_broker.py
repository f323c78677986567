"""The embedded broker under a race: producer and consumer processes on one folder.

kombu's own folder transport makes a message file visible before it is written;
a consumer that lists the folder in between reads an empty file and raises
(Celery's "Unrecoverable error"). Ours must deliver every message exactly once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from workers.folder_broker import TRANSPORT_PATH, Channel

KOMBU_TRANSPORT = "kombu.transport.filesystem:Transport"
PRODUCERS = 2
CONSUMERS = 2
PER_PRODUCER = 1000
WITHIN = 120.0  # the whole race, bounded whatever happens
IDLE = 0.5  # once producers are done, a consumer stops after this long without a message


def _options(root: Path) -> dict[str, Any]:
    queue, control = root / "queue", root / "control"
    for folder in (queue, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(control),
        "store_processed": False,
        # No pause between listings: consumers look as often as they can, the worst case.
        "polling_interval": 0,
    }


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _unique_queue() -> str:
    # kombu remembers declared bindings per process, whatever the folder: a name used
    # by an earlier test would not be bound again in this test's folder.
    return f"race-{uuid.uuid4().hex[:8]}.regeneration"


def _connection(transport: str, root: Path) -> Connection:
    return Connection(
        "filesystem://localhost//", transport=transport, transport_options=_options(root)
    )


def _produce(transport: str, root: Path, name: str, producer: int) -> None:
    with _connection(transport, root) as conn:
        publish = Producer(conn.channel()).publish
        for seq in range(PER_PRODUCER):
            publish(
                {"id": f"{producer}-{seq}"},
                exchange=_queue(name).exchange,
                routing_key=name,
                declare=[_queue(name)],
                serializer="json",
            )


def _consume(transport: str, root: Path, name: str, consumer: int, producers_done: Any) -> None:
    received: list[str] = []
    errors: list[str] = []

    def on_message(body: dict[str, str], message: Any) -> None:
        received.append(body["id"])
        message.ack()

    deadline = time.monotonic() + WITHIN
    with (
        _connection(transport, root) as conn,
        Consumer(conn.channel(), [_queue(name)], callbacks=[on_message], accept=["json"]),
    ):
        while time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=IDLE)
            except TimeoutError:
                if producers_done.is_set():
                    break
            except Exception as exc:  # the old transport's failure, counted
                errors.append(type(exc).__name__)
    out = root / f"consumer-{consumer}.json"
    out.write_text(json.dumps({"received": received, "errors": errors}))


def _race(transport: str, root: Path) -> tuple[list[str], list[str]]:
    ctx = multiprocessing.get_context("spawn")
    name = _unique_queue()
    # The exchange and its binding exist before anyone publishes, as after a first start.
    with _connection(transport, root) as conn:
        _queue(name)(conn.channel()).declare()
    producers_done = ctx.Event()
    consumers = [
        ctx.Process(target=_consume, args=(transport, root, name, n, producers_done))
        for n in range(CONSUMERS)
    ]
    producers = [
        ctx.Process(target=_produce, args=(transport, root, name, n)) for n in range(PRODUCERS)
    ]
    for proc in [*consumers, *producers]:
        proc.start()
    deadline = time.monotonic() + WITHIN
    try:
        for proc in producers:
            proc.join(max(0.0, deadline - time.monotonic()))
            assert proc.exitcode == 0, f"a producer failed: {proc.exitcode}"
        producers_done.set()
        for proc in consumers:
            proc.join(max(0.0, deadline - time.monotonic()) + IDLE * 4)
            assert proc.exitcode == 0, f"a consumer failed: {proc.exitcode}"
    finally:
        for proc in [*consumers, *producers]:
            if proc.is_alive():
                proc.kill()
                proc.join()
    received: list[str] = []
    errors: list[str] = []
    for n in range(CONSUMERS):
        result = json.loads((root / f"consumer-{n}.json").read_text())
        received += result["received"]
        errors += result["errors"]
    return received, errors


def test_every_message_is_received_exactly_once(tmp_path: Path) -> None:
    received, errors = _race(TRANSPORT_PATH, tmp_path)
    sent = {f"{p}-{s}" for p in range(PRODUCERS) for s in range(PER_PRODUCER)}
    assert errors == []
    assert len(received) == len(sent), f"{len(sent) - len(set(received))} lost"
    assert set(received) == sent
    leftovers = [name for name in os.listdir(tmp_path / "queue") if not name.startswith(".")]
    assert leftovers == []
    assert os.listdir(tmp_path / "queue" / ".claimed") == []


@pytest.mark.xfail(
    reason="known-bad baseline: kombu's own transport shows its write after create", strict=False
)
def test_kombus_own_transport_loses_messages_in_the_same_race(tmp_path: Path) -> None:
    received, errors = _race(KOMBU_TRANSPORT, tmp_path)
    sent = PRODUCERS * PER_PRODUCER
    print(f"kombu filesystem: {sent - len(set(received))} of {sent} lost, errors {errors[:3]}")
    assert errors == [] and len(set(received)) == sent


def test_an_undecodable_message_is_quarantined_and_the_next_one_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = _options(tmp_path)
    queue_dir = Path(options["data_folder_in"])
    name = _unique_queue()
    with _connection(TRANSPORT_PATH, tmp_path) as conn:
        _queue(name)(conn.channel()).declare()
        # An empty file, as kombu's own transport leaves mid-write, ahead of a good one.
        (queue_dir / f"0000000000000_torn.{name}.msg").write_bytes(b"")
        Producer(conn.channel()).publish(
            {"id": "good"}, exchange=_queue(name).exchange, routing_key=name, serializer="json"
        )
        with caplog.at_level("ERROR", logger="workers.folder_broker"):
            message = _queue(name)(conn.channel()).get(accept=["json"])
        assert message is not None and message.payload == {"id": "good"}
    assert [r.getMessage() for r in caplog.records] == ["undecodable message moved to quarantine"]
    assert os.listdir(queue_dir / ".quarantine") == [f"0000000000000_torn.{name}.msg"]


def test_a_half_written_publish_is_invisible_to_consumers(tmp_path: Path) -> None:
    """The temporary name kombu's listing would see must never match a queue."""
    queue_dir = Path(_options(tmp_path)["data_folder_in"])
    name = _unique_queue()
    (queue_dir / f".0000000000001_x.{name}.msg.tmp").write_bytes(b"")
    with _connection(TRANSPORT_PATH, tmp_path) as conn:
        channel = conn.channel()
        assert isinstance(channel, Channel)
        with pytest.raises(Empty):
            channel._get(name)
    assert (queue_dir / f".0000000000001_x.{name}.msg.tmp").exists()  # left to its producer


# --- exchange tables: several processes starting at once ----------------------------------

BINDERS = 4
EXCHANGES = 200


def _bind_all(transport: str, root: Path, prefix: str, go: Any, binder: int) -> None:
    errors: list[str] = []
    go.wait(30)
    with _connection(transport, root) as conn:
        channel = conn.channel()
        for n in range(EXCHANGES):
            name = f"{prefix}-{n}.q"
            try:
                _queue(name)(channel).declare()  # what every worker and beat does at start
                if not channel.get_table(name):
                    errors.append("empty table")
            except Exception as exc:  # counted: kombu's own transport raises here
                errors.append(type(exc).__name__)
    (root / f"binder-{binder}.json").write_text(json.dumps(errors))


def _binding_race(transport: str, root: Path) -> list[str]:
    _options(root)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    prefix = uuid.uuid4().hex[:8]
    binders = [
        ctx.Process(target=_bind_all, args=(transport, root, prefix, go, n)) for n in range(BINDERS)
    ]
    for proc in binders:
        proc.start()
    go.set()
    for proc in binders:
        proc.join(WITHIN)
        if proc.is_alive():
            proc.kill()
            proc.join()
        assert proc.exitcode == 0
    errors: list[str] = []
    for n in range(BINDERS):
        errors += json.loads((root / f"binder-{n}.json").read_text())
    return errors


def test_processes_declaring_the_same_new_exchanges_at_once_never_read_an_empty_table(
    tmp_path: Path,
) -> None:
    assert _binding_race(TRANSPORT_PATH, tmp_path) == []
    tables = sorted((tmp_path / "control").iterdir())
    assert len(tables) == EXCHANGES and all(t.suffix == ".exchange" for t in tables)


@pytest.mark.xfail(reason="known-bad baseline: kombu creates a table empty", strict=False)
def test_kombus_own_transport_reads_empty_tables_in_the_same_race(tmp_path: Path) -> None:
    errors = _binding_race(KOMBU_TRANSPORT, tmp_path)
    print(f"kombu filesystem: {len(errors)} of {BINDERS * EXCHANGES} failed: {set(errors)}")
    assert errors == []
