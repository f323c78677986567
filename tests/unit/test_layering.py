"""Dependency direction (docs/architecture.md, convention 1).

The rules themselves are import-linter contracts in pyproject.toml, run by `make test`
and `make lint` (`lint-imports`); they see imports inside functions and under
`if TYPE_CHECKING:` like any other. Tested here: that those contracts catch what they
must (on a copy of the source with wrong imports added), and the one kind of import
import-linter cannot see, a module named by a string (`importlib.import_module`,
`__import__`).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "infra", "api", "workers", "cli", "migrations", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]["contracts"]

# Where importing by name is the point, and why it stays inside the rules.
IMPORTS_BY_NAME = {
    "bench.__main__": "runs the suites of bench.__main__.SUITES, all modules of bench/",
}


# --- the contracts bite ---------------------------------------------------------------

# One wrong import per contract (by id), some in a form a reading of the top of a file
# would miss: inside a function, under TYPE_CHECKING.
WRONG_IMPORTS = {
    "domain/_wrong.py": "def f() -> None:\n    from cli import main\n",
    "infra/_wrong.py": "from workers import tasks\n",
    "workers/_wrong.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
    "    from api import app\n",
    "api/resources/_wrong.py": "from workers.tasks import register_tasks\n",
    "cli/_wrong.py": "import workers.schedule\n",
    "bench/_wrong.py": "import cli.main\n",
}
REPORTED = {
    "domain": {"domain._wrong -> cli.main"},
    "infra": {"infra._wrong -> workers.tasks"},
    "workers": {"workers._wrong -> api.app"},
    # Only these two: not the imports the contract allows (api.app, cli.processes).
    "publish-only": {"api.resources._wrong -> workers.tasks", "cli._wrong -> workers.schedule"},
    "cli": {"bench._wrong -> cli.main", "domain._wrong -> cli.main"},
}


def _copy_of_the_source(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Run in the copy, whose packages then come first on sys.path (before the
    # editable install of the original).
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def broken_imports(output: str) -> dict[str, set[str]]:
    """Contract id -> the imports lint-imports reports against it ("a -> b"): the
    first step of each chain, under each broken contract's heading."""
    names = {c["name"]: c["id"] for c in CONTRACTS}
    lines = output.split("Broken contracts", 1)[-1].splitlines()
    found: dict[str, set[str]] = {}
    current = None
    for line, underline in zip(lines, [*lines[1:], ""], strict=True):
        if line in names and underline == "-" * len(line):
            current = names[line]
        elif current and line.startswith("-   "):
            found.setdefault(current, set()).add(line[4:].rsplit(" (l.", 1)[0])
    return found


def test_the_contracts_catch_a_wrong_import_of_each_kind(tmp_path: Path) -> None:
    root = _copy_of_the_source(tmp_path)
    for name, text in WRONG_IMPORTS.items():
        (root / name).write_text(text, encoding="utf-8")
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout + result.stderr
    found = broken_imports(result.stdout)
    assert set(found) == set(REPORTED) == {c["id"] for c in CONTRACTS}
    for contract, imports in REPORTED.items():
        if contract == "domain":
            # (Until domain stops importing infra, those imports are reported too.)
            assert imports <= found[contract], found[contract]
        else:
            assert found[contract] == imports, contract


def test_an_allowed_import_that_disappears_is_reported(tmp_path: Path) -> None:
    # An exception listed in the contracts but no longer in the code fails the run,
    # so the list of allowed imports cannot outlive its reason.
    root = _copy_of_the_source(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text(encoding="utf-8").replace(
            '"api.app -> workers.runtime",',
            '"api.app -> workers.runtime",\n    "api.errors -> workers.tasks",',
        ),
        encoding="utf-8",
    )
    result = _lint_imports(root)
    assert result.returncode != 0
    assert (
        "No matches for ignored import api.errors -> workers.tasks" in result.stdout + result.stderr
    )


# --- what import-linter cannot see ------------------------------------------------------


@dataclass(frozen=True)
class ImportByName:
    source: str  # the importing module
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_import_by_name(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports_by_name(root: Path) -> list[ImportByName]:
    found: list[ImportByName] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            found.extend(
                ImportByName(module_name(root, path), node.lineno)
                for node in ast.walk(tree)
                if isinstance(node, ast.Call) and _is_import_by_name(node.func)
            )
    return found


def test_no_module_is_imported_by_a_string_outside_the_listed_places() -> None:
    found = imports_by_name(ROOT)
    assert {i.source for i in found} == set(IMPORTS_BY_NAME), found


def test_bench_imports_by_name_only_its_own_suites() -> None:
    from bench.__main__ import SUITES

    assert SUITES and all(name.startswith("bench.") for _, name in SUITES)


def test_the_scan_finds_an_import_by_name(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "x.py").write_text(
        "import importlib\nimportlib.import_module('workers.tasks')\n"
        "def f():\n    return __import__('cli.main')\n",
        encoding="utf-8",
    )
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    assert imports_by_name(tmp_path) == [ImportByName("api.x", 2), ImportByName("api.x", 4)]


# --- the app refuses a resource without roles -------------------------------------------


def test_an_app_with_a_v1_resource_without_roles_does_not_start(tmp_path: Path) -> None:
    import falcon
    import pytest

    from api import app as app_module
    from infra.migrate import upgrade
    from infra.services import Services
    from tests.support.settings import make_settings
    from workers.app import make_celery
    from workers.publish import Publisher

    class Forgetful:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {"secret": "exposed"}

    settings = make_settings(tmp_path)
    upgrade(settings.database_url)
    services = Services.build(settings)
    original = app_module.admin.register

    def register_with_a_forgetful_route(app: falcon.App, svc: Services) -> None:  # type: ignore[type-arg]
        original(app, svc)
        app.add_route("/v1/users/{user_id}/forgotten", Forgetful())

    try:
        app_module.admin.register = register_with_a_forgetful_route  # type: ignore[assignment]
        with pytest.raises(RuntimeError, match="must declare roles"):
            app_module.create_app(settings, services, Publisher(make_celery(settings), services))
    finally:
        app_module.admin.register = original  # type: ignore[assignment]
        services.close()
    # And the real app starts: every /v1 resource declares its roles.
    services = Services.build(settings)
    try:
        app_module.create_app(settings, services, Publisher(make_celery(settings), services))
    finally:
        services.close()


def test_a_public_resource_must_say_so_and_then_declares_no_roles(tmp_path: Path) -> None:
    """Only an explicit `public = True` lets a /v1 resource go without a token, and a
    public resource that also declares roles is a contradiction the app refuses."""
    import falcon
    import pytest

    from api import app as app_module
    from api.resources.repudiations import Repudiation
    from infra.migrate import upgrade
    from infra.services import Services
    from tests.support.settings import make_settings
    from workers.app import make_celery
    from workers.publish import Publisher

    assert Repudiation.public is True and not hasattr(Repudiation, "roles")

    class Confused:
        public = True
        roles = ("admin",)

        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {}

    settings = make_settings(tmp_path)
    upgrade(settings.database_url)
    services = Services.build(settings)
    original = app_module.admin.register

    def register_confused(app: falcon.App, svc: Services) -> None:  # type: ignore[type-arg]
        original(app, svc)
        app.add_route("/v1/confused", Confused())

    try:
        app_module.admin.register = register_confused  # type: ignore[assignment]
        with pytest.raises(RuntimeError, match="a public resource declares no roles"):
            app_module.create_app(settings, services, Publisher(make_celery(settings), services))
    finally:
        app_module.admin.register = original  # type: ignore[assignment]
        services.close()
