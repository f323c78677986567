"""Where the API's metrics samples go and where their port listens (api/metrics_port.py)."""

from __future__ import annotations

from pathlib import Path

from api import metrics_port
from cli.processes import prepare_api_metrics
from infra.settings import Settings


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(env={"MFA_VAR_DIR": str(tmp_path / "var"), **env}, dotenv=None)


def test_serve_gives_the_workers_an_emptied_folder_under_var_when_none_is_set(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "var" / "metrics" / "api"
    folder.mkdir(parents=True)
    (folder / "counter_123.db").write_bytes(b"an earlier run's samples")
    env: dict[str, str] = {}
    prepare_api_metrics(_settings(tmp_path, MFA_API_METRICS_PORT="9101"), env)
    assert env == {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert folder.stat().st_mode & 0o077 == 0


def test_a_given_folder_is_the_deployers_and_is_left_alone(tmp_path: Path) -> None:
    given = tmp_path / "tmpfs"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"x")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(given)}
    prepare_api_metrics(_settings(tmp_path, MFA_API_METRICS_PORT="9101"), env)
    assert env == {"PROMETHEUS_MULTIPROC_DIR": str(given)}
    assert (given / "counter_1.db").exists()


def test_without_a_metrics_port_nothing_is_set_up(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    prepare_api_metrics(_settings(tmp_path), env)
    assert env == {}
    assert not (tmp_path / "var" / "metrics").exists()


def test_the_metrics_port_listens_on_the_apis_interface() -> None:
    every = "0.0.0.0"  # noqa: S104 (a container's API; nothing is bound here)
    assert metrics_port._metrics_host([(every, 8000)]) == every
    assert metrics_port._metrics_host([("127.0.0.1", 8000)]) == "127.0.0.1"
    assert metrics_port._metrics_host(["/run/api.sock"]) == "127.0.0.1"
