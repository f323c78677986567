"""What the use cases read from the outside, named without importing infra.

infra.settings.Settings and infra.services.Services satisfy these Protocols
structurally (read-only properties, so a frozen dataclass fits); a test may pass
any object that has the same names.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # names only: any module of the domain may import the ports
    from domain.codes import CodeHasher
    from domain.crypto import SecretBox
    from domain.limits import Limits
    from domain.slots import VerificationSlots
    from domain.uow import UnitOfWork


class ServiceSettings(Protocol):
    """The settings a request or task reads."""

    @property
    def secret_keys(self) -> tuple[str, ...]: ...
    @property
    def sheet_ttl_seconds(self) -> int: ...
    @property
    def totp_issuer(self) -> str: ...


class AuditSettings(Protocol):
    """The signing keys and the checkpoints' place and rhythm."""

    @property
    def audit_signing_key(self) -> bytes: ...
    @property
    def audit_retired_public_keys(self) -> tuple[bytes, ...]: ...
    @property
    def checkpoint_folder(self) -> Path: ...
    @property
    def checkpoint_interval_seconds(self) -> int: ...


class RetentionSettings(Protocol):
    """How long finished rows are kept (domain.purge)."""

    @property
    def outbox_retention_seconds(self) -> int: ...
    @property
    def regeneration_retention_seconds(self) -> int: ...
    @property
    def auth_failure_retention_seconds(self) -> int: ...
    @property
    def lockout_window_seconds(self) -> int: ...
    @property
    def lockout_user_window_seconds(self) -> int: ...
    @property
    def mistyped_window_seconds(self) -> int: ...


class Services(Protocol):
    """The composition root as the use cases see it."""

    @property
    def settings(self) -> ServiceSettings: ...
    @property
    def box(self) -> SecretBox: ...
    @property
    def hasher(self) -> CodeHasher: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def slots(self) -> VerificationSlots: ...


class UnitsOfWork(Protocol):
    """A batch job's caller: a new unit of work for each batch."""

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]: ...


class Maintenance(UnitsOfWork, Protocol):
    """What the retention purge reads: its settings, and a unit of work per batch."""

    @property
    def settings(self) -> RetentionSettings: ...
