"""pyproject.toml declares what the requirements files do: `pip install .[dev]` equals `-r requirements-dev.txt`."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(name: str) -> list[str]:
    """The file's requirements, following `-r`, without comments."""
    out = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out += requirement_lines(line[3:].strip())
        elif line:
            out.append(line)
    return out


def test_extras_match_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = requirement_lines("requirements.txt")
    extras = project["optional-dependencies"]
    assert sorted(base + extras["ray"]) == sorted(requirement_lines("requirements-ray.txt"))
    assert sorted(base + extras["dev"]) == sorted(requirement_lines("requirements-dev.txt"))
