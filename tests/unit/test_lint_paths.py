"""`make lint` covers every Python file in the repository: the Makefile's LINT_PATHS holds each
top-level directory git tracks a .py file in (a new directory of scripts is linted from its first file)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_paths() -> set[str]:
    match = re.search(r"^LINT_PATHS\s*:?=\s*(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile has no LINT_PATHS line (`make lint` reads it)"
    return set(match.group(1).split())


def tracked_python_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line]


def test_lint_paths_cover_every_python_file_in_the_repository():
    covered = lint_paths()
    files = tracked_python_files()
    assert len(files) > 100  # git answered from the repository root, not an empty tree
    missed = sorted(f for f in files if not any(f == p or f.startswith(p.rstrip("/") + "/") for p in covered))
    assert missed == [], f"add their directories to LINT_PATHS in the Makefile so `make lint` checks them: {missed}"


def test_every_lint_path_exists():
    # A renamed directory left in LINT_PATHS would make ruff fail with "No such file" rather than lint less.
    assert sorted(p for p in lint_paths() if not (ROOT / p).exists()) == []
