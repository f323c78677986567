"""The deployment files: Dockerfile, docker-compose.yml, deploy/*.conf*.

`data/compose-spec.json` is the Compose Specification JSON schema as shipped in
docker-compose 1.29.2 on PyPI (`compose/config/compose_spec.json` inside
docker_compose-1.29.2-py2.py3-none-any.whl, Apache-2.0, 2021; sha256
0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac), vendored
unchanged because tests run without network. It declares draft 2019-09.
It predates top-level `name:` and a few newer service keys: keep the compose
file within it.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import runpy
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq.conf"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"

# Settings the config sets that gunicorn versions older than the installed one lack.
NEWER_GUNICORN_SETTINGS = {"control_socket_disable"}
SECRET_NAME = re.compile(r"SECRET|PASSW|TOKEN|PRIVATE|(^|_)KEY$|API_?KEY", re.IGNORECASE)


# --- helpers -------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<: *app) resolved by PyYAML


def compose_validator() -> Draft201909Validator:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    Draft201909Validator.check_schema(schema)
    return Draft201909Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in compose_validator().iter_errors(document)
    ]


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image (the ones built from the Dockerfile)."""
    image = compose["x-app"]["image"]
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or svc.get("image") == image
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends with a continuation line"
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append((keyword, rest))
    return stages


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def env_pairs(keyword: str, rest: str) -> list[tuple[str, str]]:
    """Names and values of an ENV or ARG instruction (key=value forms and `ENV key value`)."""
    tokens = shlex.split(rest)
    if keyword == "ENV" and tokens and "=" not in tokens[0]:
        return [(tokens[0], " ".join(tokens[1:]))]
    return [(t.partition("=")[0], t.partition("=")[2]) for t in tokens]


def load_gunicorn_conf(env: dict[str, str] | None = None) -> dict[str, Any]:
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith("MFA_")]:
            del os.environ[name]
        os.environ.update(env or {})
        return runpy.run_path(str(GUNICORN_CONF))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def resolve_cli_path(group: Any, words: list[str]) -> list[str]:
    """Walk a click group along `words`; return the resolved command path or fail."""
    import click

    cmd = group
    path: list[str] = []
    ctx = click.Context(group, info_name="mfa-codes")
    for word in words:
        if not isinstance(cmd, click.Group) or word.startswith("-"):
            break
        sub = cmd.get_command(ctx, word)
        assert sub is not None, f"`mfa-codes {' '.join([*path, word])}`: no such command"
        path.append(word)
        cmd = sub
    assert not isinstance(cmd, click.Group), (
        f"`mfa-codes {' '.join(path)}` is a group, not a command"
    )
    return path


# --- docker-compose.yml against the Compose Specification ----------------------------------


def test_compose_file_is_valid_under_the_compose_specification() -> None:
    errors = schema_errors(load_compose())
    assert errors == []


def test_compose_validation_rejects_an_unknown_key() -> None:
    mutated = copy.deepcopy(load_compose())
    mutated["services"]["api"]["restart_policy_typo"] = "always"
    assert any("restart_policy_typo" in e for e in schema_errors(mutated))


def test_compose_validation_rejects_an_unknown_top_level_key() -> None:
    mutated = copy.deepcopy(load_compose())
    mutated["servces"] = {}
    assert schema_errors(mutated) != []


def test_compose_file_has_no_version_key() -> None:
    assert "version" not in load_compose()


def test_compose_has_the_expected_services() -> None:
    services = load_compose()["services"]
    assert set(services) == {
        "postgres",
        "rabbitmq",
        "migrate",
        "api",
        "worker",
        "deliveries",
        "beat",
        "nginx",
        "mailpit",
    }
    assert set(app_services(load_compose())) == {"migrate", "api", "worker", "deliveries", "beat"}


# --- roles ---------------------------------------------------------------------------------


def test_exactly_one_beat() -> None:
    beat = load_compose()["services"]["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "scale" not in beat


def test_worker_can_be_scaled() -> None:
    worker = load_compose()["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "deploy" not in worker or "replicas" not in worker["deploy"]


def test_no_app_service_has_a_container_name() -> None:
    for name, svc in load_compose()["services"].items():
        assert "container_name" not in svc, name


def test_worker_gets_time_to_finish_its_task_on_stop() -> None:
    assert load_compose()["services"]["worker"]["stop_grace_period"] == "60s"


def test_migrations_run_once_before_the_app_roles() -> None:
    services = load_compose()["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "deliveries", "beat"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["rabbitmq"]["condition"] == "service_healthy", name


def test_only_nginx_publishes_a_port_and_the_mail_catcher_its_page_on_loopback() -> None:
    """Slow clients meet nginx, which buffers whole requests; gunicorn is not published.
    Mailpit's page shows every mail the stack sent: on 127.0.0.1 only."""
    services = load_compose()["services"]
    assert services["nginx"]["ports"] == ["8000:8000"]
    assert services["mailpit"]["ports"] == ["127.0.0.1:8025:8025"]
    assert [n for n, s in services.items() if "ports" in s] == ["nginx", "mailpit"]


def test_the_stack_sends_mail_to_its_catcher_from_a_delivery_worker() -> None:
    compose = load_compose()
    env = compose["x-app-environment"]
    assert env["MFA_SMTP_URL"] == "smtp://mailpit:1025"
    assert compose["services"]["mailpit"]["image"].startswith("axllent/mailpit:")
    assert compose["services"]["deliveries"]["command"] == ["worker", "-Q", "deliveries"]


def test_nginx_runs_the_repository_config_in_front_of_the_api() -> None:
    nginx = load_compose()["services"]["nginx"]
    assert nginx["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"] == {"api": {"condition": "service_started"}}
    assert "/healthz" in " ".join(nginx["healthcheck"]["test"])
    conf = NGINX_CONF.read_text()
    directives = dict(re.findall(r"^\s*([a-z_]+)\s+([^;{]+);", conf, re.MULTILINE))
    assert directives["listen"] == "8000"  # where the published port points
    assert directives["set"] == "$api_upstream api:8000"  # the api service, gunicorn's bind
    assert directives["proxy_pass"] == "http://$api_upstream"
    assert directives["proxy_request_buffering"] == "on"
    assert directives["client_header_timeout"] == "10s"
    assert directives["client_body_timeout"] == "10s"
    # The client's own address replaces whatever X-Forwarded-For it sent (the API
    # believes the header from nginx, so a client must not choose what it says).
    assert "X-Forwarded-For $remote_addr" in conf
    assert "$proxy_add_x_forwarded_for" not in conf
    # The access log writes the path ($uri), never the query string ($request, $args).
    log_format = re.search(r"log_format mfa ([^;]+);", conf)
    assert log_format and "$uri" in log_format.group(1)
    for leak in ("$request ", "$request_uri", "$args", "$query_string", "$http_authorization"):
        assert leak not in log_format.group(1), leak
    assert "access_log /dev/stdout mfa;" in conf


def test_the_api_trusts_forwarded_for_from_the_compose_network_only() -> None:
    from ipaddress import ip_network

    env = load_compose()["services"]["api"]["environment"]
    networks = [ip_network(n) for n in env["MFA_TRUSTED_PROXIES"].split(",")]
    assert networks and all(n.is_private for n in networks)
    assert "ports" not in load_compose()["services"]["api"]


def test_healthchecks_where_they_make_sense() -> None:
    services = load_compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["rabbitmq"]["healthcheck"]["test"] == [
        "CMD",
        "rabbitmq-diagnostics",
        "-q",
        "ping",
    ]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    # The image's HEALTHCHECK probes the API's port: the other roles must not inherit it.
    for name in ("migrate", "worker", "beat"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_rabbitmq_mounts_the_config_read_only() -> None:
    volumes = load_compose()["services"]["rabbitmq"]["volumes"]
    assert "./deploy/rabbitmq.conf:/etc/rabbitmq/conf.d/90-mfa.conf:ro" in volumes


def test_bind_mounts_point_at_files_in_the_repository() -> None:
    for name, svc in load_compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose["volumes"])
    assert {"pgdata", "rabbitmqdata"} <= declared
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


# --- secrets and environment ---------------------------------------------------------------


def test_secrets_come_from_files_under_secrets_dir() -> None:
    compose = load_compose()
    secrets = compose["secrets"]
    assert set(secrets) == {"mfa_secret_key", "mfa_audit_signing_key"}
    for name, spec in secrets.items():
        assert spec == {"file": f"./secrets/{name}"}
    for name, svc in app_services(compose).items():
        assert set(svc["secrets"]) == set(secrets), name
        env = svc["environment"]
        assert env["MFA_SECRET_KEY_FILE"] == "/run/secrets/mfa_secret_key"
        assert env["MFA_AUDIT_SIGNING_KEY_FILE"] == "/run/secrets/mfa_audit_signing_key"
        assert "MFA_SECRET_KEY" not in env and "MFA_AUDIT_SIGNING_KEY" not in env


def test_no_password_is_written_into_the_compose_file() -> None:
    for name, svc in load_compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), f"{name}.{key} = {value!r}"
            # Credentials inside a URL are interpolated too, never literal.
            m = re.search(r"://[^:/@]+:([^@]*)@", value)
            if m:
                assert m.group(1).startswith("${"), f"{name}.{key} has a literal password"


def test_app_environment_names_are_read_by_settings() -> None:
    """A typo (MFA_SECRET_KEYFILE) would silently fall back to a default: catch it here."""
    known = set(re.findall(r"MFA_[A-Z0-9_]+", (ROOT / "infra" / "settings.py").read_text()))
    # Read by a library itself, not by Settings.
    third_party = {"PROMETHEUS_MULTIPROC_DIR"}
    for name, svc in app_services(load_compose()).items():
        for key in svc["environment"]:
            if key in third_party:
                continue
            base = key.removesuffix("_FILE")
            assert key in known or base in known, f"{name}: {key} is not read by Settings"


def _interpolate(value: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{([A-Z_]+)(?::[?-][^}]*)?\}", lambda m: values[m.group(1)], value)


def test_app_environment_configures_settings(tmp_path: Path) -> None:
    """The compose environment, with the secret files in place, gives a non-embedded Settings."""
    from cryptography.fernet import Fernet

    from infra.settings import Settings

    fernet = Fernet.generate_key().decode()
    signing = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "mfa_secret_key").write_text(fernet + "\n")
    (tmp_path / "mfa_audit_signing_key").write_text(signing + "\n")
    fake = {
        "POSTGRES_PASSWORD": "pg-pw",
        "POSTGRES_APP_PASSWORD": "app-pw",
        "RABBITMQ_PASSWORD": "mq-pw",
        "MFA_IMAGE_TAG": "t",
    }

    env = {
        key: _interpolate(str(value), fake).replace("/run/secrets/", f"{tmp_path}/")
        for key, value in load_compose()["services"]["api"]["environment"].items()
    }
    env["MFA_VAR_DIR"] = str(tmp_path / "var")
    settings = Settings.from_env(env, dotenv=None)

    assert settings.database_url == "postgresql+psycopg://mfa_app:app-pw@postgres:5432/mfa"
    assert settings.migration_database_url is None  # the api never holds the owner
    assert settings.broker_url == "amqp://mfa:mq-pw@rabbitmq:5672//"
    assert not settings.is_sqlite and not settings.embedded_broker
    assert settings.secret_keys == (fernet,)
    assert settings.audit_signing_key == base64.b64decode(signing)
    assert settings.log_json
    assert not (tmp_path / "var").exists(), "no key file may be created outside embedded mode"


def test_rabbitmq_and_postgres_credentials_match_the_urls() -> None:
    services = load_compose()["services"]
    api_env = services["api"]["environment"]
    pg = services["postgres"]["environment"]
    mq = services["rabbitmq"]["environment"]
    # The service connects as mfa_app, which owns nothing; only migrate has the owner.
    assert "://mfa_app:${POSTGRES_APP_PASSWORD" in api_env["MFA_DATABASE_URL"]
    assert api_env["MFA_DATABASE_URL"].endswith(f"/{pg['POSTGRES_DB']}")
    assert "${POSTGRES_APP_PASSWORD" in pg["MFA_APP_DB_PASSWORD"]
    owner = services["migrate"]["environment"]["MFA_MIGRATION_DATABASE_URL"]
    assert f"://{pg['POSTGRES_USER']}:${{POSTGRES_PASSWORD" in owner
    assert owner.endswith(f"/{pg['POSTGRES_DB']}")
    for name in ("api", "worker", "beat"):
        assert "MFA_MIGRATION_DATABASE_URL" not in services[name]["environment"], name
    assert f"://{mq['RABBITMQ_DEFAULT_USER']}:" in api_env["MFA_BROKER_URL"]
    assert "${POSTGRES_PASSWORD" in pg["POSTGRES_PASSWORD"]
    assert "${RABBITMQ_PASSWORD" in mq["RABBITMQ_DEFAULT_PASS"]


def test_secrets_dir_is_git_ignored() -> None:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets/" in lines


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", "var", "secrets", ".env", "*.pdf", "bench/results"):
        assert entry in ignored, entry


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert stage[0][1].split()[0] == "python:3.11-slim"
    final = stages[-1]
    copies = [rest for kw, rest in final if kw == "COPY"]
    assert any("--from=" in c and "/opt/venv" in c for c in copies)


def test_dockerfile_final_stage_runs_as_a_non_root_user() -> None:
    users = [rest for kw, rest in dockerfile_stages()[-1] if kw == "USER"]
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert users[-1] == "mfa"
    runs = " ".join(rest for kw, rest in dockerfile_stages()[-1] if kw == "RUN")
    assert "--uid 10001" in runs


def test_dockerfile_installs_no_dev_extra() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword == "RUN":
            assert "[dev]" not in rest and "'.[dev" not in rest, rest
            assert not re.search(r"\bpip install\b.*\b-e\b", rest), "editable install in the image"


def test_dockerfile_has_a_healthcheck_on_healthz() -> None:
    checks = [rest for kw, rest in dockerfile_stages()[-1] if kw == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "http://127.0.0.1:8000/healthz" in checks[0]
    assert "urllib" in checks[0]
    exposed = [rest for kw, rest in dockerfile_stages()[-1] if kw == "EXPOSE"]
    assert exposed == ["8000"]


def test_dockerfile_bakes_in_no_secret() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword in {"ENV", "ARG"}:
            for name, _value in env_pairs(keyword, rest):
                assert not (SECRET_NAME.search(name) and not name.endswith("_FILE")), (
                    f"{keyword} {name} looks like a secret"
                )
        if keyword in {"COPY", "ADD"}:
            assert "secrets" not in rest and ".env" not in rest.split(), rest


def test_dockerfile_environment() -> None:
    env = {}
    for keyword, rest in dockerfile_stages()[-1]:
        if keyword == "ENV":
            env.update(env_pairs(keyword, rest))
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["MFA_VAR_DIR"] == "/app/var"
    assert [rest for kw, rest in dockerfile_stages()[-1] if kw == "WORKDIR"] == ["/app"]


def test_dockerfile_ships_the_gunicorn_config_where_gunicorn_looks() -> None:
    copies = [rest for kw, rest in dockerfile_stages()[-1] if kw == "COPY"]
    assert "deploy/gunicorn.conf.py /app/gunicorn.conf.py" in copies


def test_dockerfile_entrypoint_and_cmd() -> None:
    final = dockerfile_stages()[-1]
    entry = [exec_form(rest) for kw, rest in final if kw == "ENTRYPOINT"]
    cmd = [exec_form(rest) for kw, rest in final if kw == "CMD"]
    assert entry == [["mfa-codes"]]
    assert cmd == [["serve"]]


# --- the commands name real CLI commands ---------------------------------------------------


def test_every_command_resolves_to_a_cli_command() -> None:
    cli_main = pytest.importorskip("cli.main")
    compose = load_compose()
    commands = {name: svc["command"] for name, svc in app_services(compose).items()}
    final = dockerfile_stages()[-1]
    commands["Dockerfile CMD"] = next(exec_form(r) for k, r in final if k == "CMD")
    assert next(exec_form(r) for k, r in final if k == "ENTRYPOINT") == ["mfa-codes"]

    expected = {
        "migrate": ["db", "upgrade"],
        "api": ["serve"],
        "worker": ["worker"],
        "deliveries": ["worker", "-Q", "deliveries"],
        "beat": ["beat"],
        "Dockerfile CMD": ["serve"],
    }
    assert commands == expected
    for name, words in commands.items():
        assert isinstance(words, list), f"{name}: use the exec form (a list)"
        command = words[: next((i for i, w in enumerate(words) if w.startswith("-")), len(words))]
        assert resolve_cli_path(cli_main.cli, words) == command, name


def test_the_console_script_is_the_entrypoint() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^mfa-codes\s*=\s*"cli\.main:main"', text, re.MULTILINE)


# --- gunicorn ------------------------------------------------------------------------------


def test_gunicorn_config_uses_only_known_valid_settings() -> None:
    from gunicorn.config import Config

    conf = load_gunicorn_conf()
    cfg = Config()
    settings = {
        k: v for k, v in conf.items() if not k.startswith("_") and k not in {"os", "annotations"}
    }
    assert settings, "nothing read from the config"
    for name, value in settings.items():
        if callable(value):
            continue
        if name in NEWER_GUNICORN_SETTINGS and name not in cfg.settings:
            continue  # an older gunicorn ignores it, as intended
        assert name in cfg.settings, f"{name} is not a gunicorn setting"
        cfg.set(name, value)  # runs gunicorn's own validator


def test_gunicorn_defaults() -> None:
    conf = load_gunicorn_conf()
    assert conf["bind"] == "0.0.0.0:8000"
    assert 1 <= conf["workers"] <= 8
    assert conf["workers"] == min(2 * (os.cpu_count() or 1) + 1, 8)
    assert conf["worker_class"] in {"sync", "gthread"}
    assert conf["timeout"] == 30
    assert conf["graceful_timeout"] == 30
    assert conf["keepalive"] == 5
    assert conf["accesslog"] == "-" and conf["errorlog"] == "-"
    assert conf["limit_request_line"] == 8190


def test_gunicorn_reads_its_tuning_from_the_environment() -> None:
    conf = load_gunicorn_conf(
        {
            "MFA_BIND": "127.0.0.1:9000",
            "MFA_WEB_CONCURRENCY": "3",
            "MFA_FORWARDED_ALLOW_IPS": "10.0.0.5",
        }
    )
    assert conf["bind"] == "127.0.0.1:9000"
    assert conf["workers"] == 3
    assert conf["forwarded_allow_ips"] == "10.0.0.5"


def test_gunicorn_access_log_holds_no_query_string_or_header() -> None:
    fmt = load_gunicorn_conf()["access_log_format"]
    assert "%(U)s" in fmt
    for leak in ("%(r)s", "%(q)s", "{authorization}", "{cookie}", "%({x-api-key}i)s"):
        assert leak.lower() not in fmt.lower(), leak
    # Request headers (…i) are out entirely; response headers (…o) only the request id.
    assert re.findall(r"%\(\{([^}]*)\}([io])\)s", fmt) == [("x-request-id", "o")]


def test_gunicorn_master_serves_the_api_metrics_and_forgets_dead_workers() -> None:
    from api import metrics_port

    conf = load_gunicorn_conf()
    assert conf["when_ready"] is metrics_port.when_ready
    assert conf["child_exit"] is metrics_port.child_exit


def test_run_serves_its_api_with_the_buffering_worker_class() -> None:
    from cli import processes as pc

    argv = pc.gunicorn_argv("127.0.0.1", 8000, 2, {}, ROOT, pc.RUN_WORKER_CLASS)
    assert argv[argv.index("--worker-class") + 1] == "api.waitress_worker.WaitressWorker"
    assert "--worker-class" not in pc.gunicorn_argv(None, None, None, {}, ROOT)


def test_api_stop_grace_exceeds_gunicorn_graceful_timeout() -> None:
    grace = load_compose()["services"]["api"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) > load_gunicorn_conf()["graceful_timeout"]


# --- RabbitMQ ------------------------------------------------------------------------------


def test_rabbitmq_consumer_timeout_is_kept_at_thirty_minutes_or_more() -> None:
    values = {}
    for line in RABBITMQ_CONF.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not a `key = value` line: {line!r}"
            values[key.strip()] = value.strip()
    assert int(values["consumer_timeout"]) >= 30 * 60 * 1000
