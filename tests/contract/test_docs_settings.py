"""docs/operations.md's settings reference lists exactly the MFA_* variables that
infra/settings.py reads (a NAME read as a secret may also come as NAME_FILE), and
no page names a variable that nothing reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "infra" / "settings.py"
OPERATIONS = ROOT / "docs" / "operations.md"
PAGES = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_NAME = re.compile(r"MFA_[A-Z0-9_]*[A-Z0-9]")
_SKIP = {".git", ".venv", "var", "docs", "__pycache__", ".mypy_cache", ".ruff_cache"}


def read_by_settings() -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(n for n in [node.value] if _NAME.fullmatch(n))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_secret":
            name = node.args[1]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str)
            names.add(f"{name.value}_FILE")  # _secret(env, NAME) also reads NAME_FILE
    return names


def documented() -> set[str]:
    text = OPERATIONS.read_text(encoding="utf-8")
    start = text.index("\n## Settings reference")
    following = re.compile(r"\n#{2,3} ").search(text, start + 1)  # "Read elsewhere" is not it
    table = text[start : following.start() if following else None]
    rows = [line for line in table.splitlines() if line.startswith("| `MFA_")]
    return {n for row in rows for n in _NAME.findall(row.split(" | ")[0])}


def read_anywhere() -> str:
    """Every source and configuration file outside the docs."""
    chunks: list[str] = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.is_file() and not parts & _SKIP and path.suffix != ".md":
            chunks.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(chunks)


def test_the_reference_lists_exactly_what_settings_reads() -> None:
    assert documented() == read_by_settings()


def test_every_variable_a_page_names_is_read_somewhere() -> None:
    code = set(_NAME.findall(read_anywhere())) | read_by_settings()
    for page in PAGES:
        unknown = set(_NAME.findall(page.read_text(encoding="utf-8"))) - code
        assert not unknown, f"{page.relative_to(ROOT)} names {sorted(unknown)}, read nowhere"
