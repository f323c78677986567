"""docs/api.md tells the truth about api/openapi.yaml and about the code.

Every operation of the OpenAPI document has a section in the reference, with the
role the document gives it, and the reference names no operation the document
lacks (README.md and the other docs/ pages neither). The reference's table of
problem types lists exactly the slugs the code can answer: those of the domain's
exceptions and those api/errors.py renders itself; every slug a page names is
in that table.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import yaml

import domain
from domain.errors import DomainError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "api.md"
OPENAPI = ROOT / "api" / "openapi.yaml"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")

# `GET /v1/me/mfa`, also inside a longer code span; a query string is not part of the path.
_NAMED = re.compile(r"`(?:[^`\n]*\s)?(" + "|".join(METHODS) + r") (/[A-Za-z0-9_{}/.\-]*)")
_SECTION = re.compile(r"^### `(" + "|".join(METHODS) + r") (/[^`]*)`\s*$", re.MULTILINE)
_ROLE = re.compile(r"^\*\*Role:\*\* (?:`([a-z]+)`|none)", re.MULTILINE)
_SLUG = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
# `409 mfa-not-enrolled` or /problems/mfa-not-enrolled
_SLUG_MENTION = re.compile(r"`\d{3}\s(" + _SLUG + r")`|/problems/(" + _SLUG + r")")
_SLUG_ROW = re.compile(r"^\| `(" + _SLUG + r")` \|", re.MULTILINE)


def openapi() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return loaded


def operations() -> dict[tuple[str, str], str | None]:
    """(METHOD, path) -> the role the document requires, None for an open endpoint."""
    found: dict[tuple[str, str], str | None] = {}
    paths = openapi()["paths"]
    assert isinstance(paths, dict)
    for path, item in paths.items():
        for method, op in item.items():
            if method.upper() in METHODS:
                found[(method.upper(), path)] = None if op.get("security") == [] else op["x-role"]
    return found


def named_in(page: Path) -> set[tuple[str, str]]:
    return {(m, p) for m, p in _NAMED.findall(page.read_text(encoding="utf-8"))}


def sections() -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the text of its section in the reference."""
    text = REFERENCE.read_text(encoding="utf-8")
    heads = list(_SECTION.finditer(text))
    found: dict[tuple[str, str], str] = {}
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        following = re.search(r"^#{1,3} ", text[head.end() : end], re.MULTILINE)
        stop = head.end() + following.start() if following else end
        key = (head.group(1), head.group(2))
        assert key not in found, f"{key} has two sections"
        found[key] = text[head.end() : stop]
    return found


def test_every_operation_has_a_section_and_nothing_else_has_one() -> None:
    assert set(sections()) == set(operations())


def test_every_section_names_the_role_the_document_requires() -> None:
    roles = operations()
    for key, body in sections().items():
        stated = _ROLE.search(body)
        assert stated is not None, f"{key}: no **Role:** line"
        assert stated.group(1) == roles[key], f"{key}: role {stated.group(1)} != {roles[key]}"


def test_the_pages_name_only_operations_that_exist() -> None:
    known = set(operations())
    for page in PAGES:
        unknown = named_in(page) - known
        assert not unknown, f"{page.relative_to(ROOT)} names {sorted(unknown)}"


# --- problem slugs -------------------------------------------------------------------


def domain_slugs() -> set[str]:
    """The slug of every DomainError subclass, wherever in domain/ it is defined."""
    for module in pkgutil.walk_packages(domain.__path__, "domain."):
        importlib.import_module(module.name)
    slugs: set[str] = set()
    pending = list(DomainError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        slugs.add(cls.slug)
    return slugs


def api_slugs() -> set[str]:
    """Slugs api/errors.py renders itself: the values of a status -> slug table, the
    keys of a slug -> status table, and the first argument of a call (`_body(slug, ...)`)."""
    tree = ast.parse((ROOT / "api" / "errors.py").read_text(encoding="utf-8"))
    is_slug = re.compile(_SLUG + "$").match

    def text(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and is_slug(node.value):
            return node.value
        return None

    slugs: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    continue
                if isinstance(key, ast.Constant) and isinstance(key.value, int):
                    slugs.update(s for s in [text(value)] if s)  # status -> slug
                elif isinstance(value, ast.Attribute) or (
                    isinstance(value, ast.Constant) and isinstance(value.value, int)
                ):
                    slugs.update(s for s in [text(key)] if s)  # slug -> status (int or enum)
        elif isinstance(node, ast.Call) and node.args:
            slugs.update(s for s in [text(node.args[0])] if s)
    # The base class's slug is in the status table only as a fallback: nothing raises it.
    return slugs - {DomainError.slug}


def documented_slugs() -> set[str]:
    return set(_SLUG_ROW.findall(_problem_table()))


def _problem_table() -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    start = text.index("\n## Problem types")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_problem_table_lists_exactly_the_slugs_the_code_answers() -> None:
    code = domain_slugs() | api_slugs()
    assert documented_slugs() == code


def test_every_slug_a_page_or_the_document_names_is_in_the_table() -> None:
    table = documented_slugs()
    for source in [*PAGES, OPENAPI]:
        named = {a or b for a, b in _SLUG_MENTION.findall(source.read_text(encoding="utf-8"))}
        assert named <= table, f"{source.relative_to(ROOT)} names {sorted(named - table)}"
