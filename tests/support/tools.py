"""Finding the external programs the tests drive (compose, kubectl, checkov, nginx): the first candidate
that exists, or a failed test that says how `make test` installs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def venv_bin(name: str) -> Path:
    """A console script installed into the running interpreter's environment."""
    return Path(sys.executable).parent / name


def find_tool(candidates: list[Path | str | None], missing: str) -> str:
    """The first existing path among `candidates` (None entries, e.g. a failed shutil.which, are skipped)."""
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(missing)
