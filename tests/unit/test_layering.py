"""Dependency direction (DESIGN.md, rule 1), read from the source with ast:

- `domain` imports nothing from `api`, `workers` or `cli`;
- `api` reaches `workers` only to publish: `workers.runtime` or `workers.publish`;
- `workers` imports nothing from `api`;
- nothing outside `cli` imports `cli`.

Imports under `if TYPE_CHECKING:` and inside functions count like any other, and
so do `importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "api", "workers", "cli", "migrations", "bench")
API_MAY_USE = ("workers.runtime", "workers.publish")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    line: int
    target: str  # the imported module (or module.name for `from module import name`)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(source: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = source.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    source = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(source, path.name == "__init__.py", node.module, node.level)
            for alias in node.names:
                yield Import(source, node.lineno, f"{base}.{alias.name}")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield Import(source, node.lineno, first.value)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def all_imports(root: Path) -> list[Import]:
    found: list[Import] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found.extend(imports_of(root, path))
    return found


def _in(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def violations(imports: list[Import]) -> list[str]:
    bad: list[str] = []
    for imp in imports:
        where = f"{imp.source}:{imp.line} imports {imp.target}"
        if _in(imp.source, "domain") and any(_in(imp.target, p) for p in ("api", "workers", "cli")):
            bad.append(f"{where}: domain depends on nothing outside it")
        if (
            _in(imp.source, "api")
            and _in(imp.target, "workers")
            and not any(_in(imp.target, allowed) for allowed in API_MAY_USE)
        ):
            bad.append(f"{where}: api may use workers only to publish ({', '.join(API_MAY_USE)})")
        if _in(imp.source, "workers") and _in(imp.target, "api"):
            bad.append(f"{where}: workers do not depend on the HTTP layer")
        if not _in(imp.source, "cli") and _in(imp.target, "cli"):
            bad.append(f"{where}: nothing imports cli")
    return bad


# --- the project ----------------------------------------------------------------------


def test_the_scan_sees_the_source() -> None:
    # Guards the rule below against scanning nothing.
    targets = {(i.source, i.target) for i in all_imports(ROOT)}
    assert ("api.app", "workers.runtime.make_publisher") in targets
    assert any(source.startswith("domain.") for source, _ in targets)


def test_dependencies_point_the_right_way() -> None:
    assert violations(all_imports(ROOT)) == []


# --- the checker itself ---------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"domain/a.py": "import api.app\n"}, "domain.a:1 imports api.app"),
        ({"domain/a.py": "from workers import tasks\n"}, "domain.a:1 imports workers.tasks"),
        (
            {"domain/a.py": "def f():\n    from cli.main import run\n"},
            "domain.a:2 imports cli.main.run",
        ),
        (
            {
                "api/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from workers.app import make_celery\n"
            },
            "api.x:3 imports workers.app.make_celery",
        ),
        (
            {"api/resources/r.py": "import importlib\nimportlib.import_module('workers.tasks')\n"},
            "api.resources.r:2 imports workers.tasks",
        ),
        ({"workers/t.py": "from api import errors\n"}, "workers.t:1 imports api.errors"),
        ({"bench/b.py": "from cli.main import main\n"}, "bench.b:1 imports cli.main.main"),
        ({"domain/sub/m.py": "from ...api import app\n"}, "domain.sub.m:1 imports api.app"),
    ],
)
def test_the_checker_finds_a_wrong_import(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    found = violations(all_imports(_tree(tmp_path, files)))
    assert found and all(f.startswith(expected) for f in found), found


def test_the_checker_allows_what_the_rules_allow(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "api/app.py": "from workers.publish import Publisher\nfrom workers import runtime\n",
            "api/__init__.py": "from . import app\nfrom domain import errors\n",
            "workers/t.py": "from domain import regeneration\nfrom workers.app import x\n",
            "cli/main.py": "from cli import common\nimport workers.tasks\nimport api.app\n",
            "domain/m.py": "from . import errors\nfrom infra.db import utcnow\n",
        },
    )
    assert violations(all_imports(root)) == []


def test_an_app_with_a_v1_resource_without_roles_does_not_start(tmp_path: Path) -> None:
    import falcon
    import pytest

    from api import app as app_module
    from infra.migrate import upgrade
    from infra.services import Services
    from tests.conftest import make_settings
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
