"""The embedded broker: kombu's folder transport with atomic publishes and claims.

kombu's own `filesystem://` creates a message file and writes it afterwards, so
a consumer listing the folder in between reads an empty file, raises
JSONDecodeError and Celery stops the worker ("Unrecoverable error"). It also
claims a message by moving it to the system's temporary folder, which is a
copy (not a rename) when that folder is another file system, so two consumers
can both take one message. Here:

- a publish writes `.<name>.tmp` (the consumers' listing ignores it) and
  renames it into place, so a visible message file is always complete;
- a consumer claims a message by renaming it into a folder beside the queue
  (the same file system, so exactly one consumer wins), reads it, deletes it;
- an exchange's table (its bindings) appears complete, never empty;
- a file that still cannot be decoded (a crash mid-write of an older version,
  a damaged disk) is moved to a quarantine folder and logged, never raised:
  the outbox sweep republishes whatever it stood for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

log = logging.getLogger(__name__)

# For `broker_transport` / `kombu.Connection(transport=...)`.
TRANSPORT_PATH = "workers.folder_broker:Transport"
MESSAGE_SUFFIX = ".msg"
TEMPORARY_PREFIX = "."  # kombu's listing matches on what follows the first dot


def message_name(queue: str) -> str:
    # Milliseconds first, as kombu names them, so consumers take the oldest first;
    # zero-padded (kombu's are not) so that the order holds when a digit is added.
    return f"{round(monotonic() * 1000):013d}_{uuid.uuid4()}.{queue}{MESSAGE_SUFFIX}"


def is_message_of(filename: str, queue: str) -> bool:
    return not filename.startswith(TEMPORARY_PREFIX) and filename.partition(".")[2] == (
        queue + MESSAGE_SUFFIX
    )


class Channel(filesystem.Channel):
    """Same folders and file names as kombu's, so either reads what the other wrote.
    A message is deleted once read (kombu's `store_processed` is not supported)."""

    # kombu's own filesystem Channel narrows AbstractChannel's _put and _get the same
    # way (celery-types' stub carries the same ignores); kombu calls them so.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = message_name(queue)
        folder = self.data_folder_out
        temporary = os.path.join(folder, f"{TEMPORARY_PREFIX}{name}.tmp")
        try:
            with open(temporary, "xb") as f:
                f.write(str_to_bytes(dumps(payload)))
            # No fsync (a disk flush per request): a message lost to a power cut is
            # republished from the outbox, and a torn file is quarantined.
            os.replace(temporary, os.path.join(folder, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue: str) -> Any:  # type: ignore[override]
        folder = self.data_folder_in
        for filename in sorted(os.listdir(folder)):
            if not is_message_of(filename, queue):
                continue
            claimed = self.claim_folder / filename
            try:
                os.rename(os.path.join(folder, filename), claimed)
            except FileNotFoundError:
                continue  # another consumer took it first
            except OSError as exc:
                raise ChannelError(f"Cannot claim {filename!r} from the queue") from exc
            try:
                payload = claimed.read_bytes()
            except OSError as exc:
                raise ChannelError(f"Cannot read {filename!r} from the queue") from exc
            try:
                message = loads(bytes_to_str(payload))
            except ValueError:
                self._quarantine(claimed, queue, len(payload))
                continue
            claimed.unlink()
            return message
        raise Empty()

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        """kombu creates an exchange's table file empty and fills it afterwards: a
        process reading it in between (another one starting) raised JSONDecodeError.
        A new table appears complete instead; an existing one is updated under
        kombu's lock, as before."""
        # A private helper of kombu's filesystem Channel, missing from celery-types' stub.
        table = self._exchange_file(exchange)  # type: ignore[attr-defined]
        if not table.exists():
            self.control_folder.mkdir(parents=True, exist_ok=True)
            entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
            temporary = table.with_name(f"{TEMPORARY_PREFIX}{table.name}.{uuid.uuid4()}.tmp")
            temporary.write_bytes(str_to_bytes(dumps([entry])))
            try:
                os.link(temporary, table)  # exclusive: fails if another process was first
                return
            except FileExistsError:
                pass  # theirs stands: add ours to it below
            finally:
                temporary.unlink(missing_ok=True)
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def _quarantine(self, path: Path, queue: str, size: int) -> None:
        # The file name and its size only: a message body is never logged.
        target = self.quarantine_folder / path.name
        os.replace(path, target)
        log.error(
            "undecodable message moved to quarantine",
            extra={"queue": queue, "file": str(target), "bytes": size},
        )

    def _sibling(self, option: str, name: str) -> Path:
        configured = self.transport_options.get(option)
        path = Path(configured) if configured else Path(self.data_folder_in) / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def claim_folder(self) -> Path:
        """Where a consumer renames a message to take it: must be the queue's file system."""
        return self._sibling("claim_folder", ".claimed")

    @cached_property
    def quarantine_folder(self) -> Path:
        return self._sibling("quarantine_folder", ".quarantine")


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = "mfa-folder"
