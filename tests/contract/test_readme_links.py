"""A clone explains itself: every relative link of the README and of docs/ leads to
a file of the repository (and to a heading of it where an anchor is given), and no
file points outside the repository to the workplace's shared folder."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Written in two pieces so that this file does not mention it itself.
OUTSIDE = ".." + "/shared"
SKIP_DIRS = {".git", ".venv", "var", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6} (.+?)\s*#*\s*$", re.MULTILINE)


def links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))  # code blocks hold no links
    return _LINK.findall(text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens, and
    -1, -2 ... after a repeated one."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in _HEADING.findall(text):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
        slug = "".join(
            ch for ch in plain if ch in " -_" or unicodedata.category(ch)[0] in "LN"
        ).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def test_there_are_pages_with_links() -> None:
    assert (ROOT / "docs").is_dir()
    assert sum(len(links(p)) for p in PAGES) > 10


def test_every_relative_link_resolves_inside_the_repository() -> None:
    broken: list[str] = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto: ...: not the repository's to check
            path_part, _, anchor = target.partition("#")
            where = page if not path_part else (page.parent / unquote(path_part)).resolve()
            name = f"{page.relative_to(ROOT)}: {target}"
            if not where.is_relative_to(ROOT) or not where.exists():
                broken.append(f"{name} (no such file in the repository)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{name} (no such heading)")
    assert not broken, "\n".join(broken)


def test_anchor_ids_are_those_github_makes() -> None:
    readme = anchors(ROOT / "README.md")
    assert "the-two-commands" in readme
    assert "a-first-walk-with-curl" in readme


def test_no_file_points_to_the_shared_folder() -> None:
    found: list[str] = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if OUTSIDE.encode() in path.read_bytes():
                found.append(str(path.relative_to(ROOT)))
    assert not found, f"these files point outside the repository: {found}"
