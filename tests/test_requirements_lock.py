"""The image installs requirements.lock with ``--no-deps``: every runtime dependency of
pyproject.toml must be pinned there (else the image's ``pip check`` fails minutes into
``make image``; this says so in a second, naming the package)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_every_runtime_dependency_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    lock = (ROOT / "requirements.lock").read_text()
    locked = {_name(line.split("==")[0]) for line in lock.splitlines() if "==" in line[:80]}
    missing = sorted(wanted - locked)
    assert not missing, (
        f"not in requirements.lock: {missing}; regenerate it with the command in its header"
    )


def test_the_helper_normalises_names() -> None:
    assert _name("tritonclient[http]>=2.50") == "tritonclient"
    assert _name("Miniopy_Async>=1.23,<2") == "miniopy-async"
