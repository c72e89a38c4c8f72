"""Every link in README.md and docs/ resolves inside the checkout: the file exists, and
an #anchor names a heading of it (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
DOCS = [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE_RE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE_RE.sub("", path.read_text())
    return {slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_link_resolves_inside_the_checkout(doc: Path) -> None:
    text = FENCE_RE.sub("", doc.read_text())
    broken = []
    for target in LINK_RE.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked here
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        missing = not path.is_relative_to(CHECKOUT) or not path.exists()
        if missing or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{doc.relative_to(CHECKOUT)}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_no_reference_outside_the_checkout(doc: Path) -> None:
    """The docs stand alone: a path outside the checkout (../shared) or an issue number
    means nothing to a reader of this tree."""
    text = doc.read_text()
    found = re.findall(r"\.\./shared\b|\b[Ii]ssues? #?\d+", text)
    assert not found, f"{doc.relative_to(CHECKOUT)}: {found}"
