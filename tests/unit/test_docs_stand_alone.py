"""The project's documentation stands on its own: it cites no file the project does not contain,
and every relative link in README.md and docs/ leads to a file of the project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
#: Ways of pointing a reader at a design file outside the project.
OUTSIDE = re.compile(r"DESIGN\.md|DESIGN §|DESIGN's|(?i:design brief)|\.\./shared/|/work/shared")


def project_text_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder, patterns in {
        "docs": ["*.md"],
        "deploy": ["*"],
        "src": ["*.py", "*.md", "*.txt"],
        "tests": ["*.py"],
        "tools": ["*.py"],
        "bench": ["*.md"],
        "proto": ["*.proto"],
    }.items():
        for pattern in patterns:
            files += [p for p in (ROOT / folder).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts]
    return sorted(set(files) - {Path(__file__)})


def test_nothing_cites_a_design_file_outside_the_project() -> None:
    found = []
    for path in project_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "say it in the project's own docs (docs/design.md) instead:\n" + "\n".join(found)


def test_relative_links_of_the_docs_lead_to_files_of_the_project() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert not broken, "\n".join(broken)
