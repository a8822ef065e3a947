"""requirements.lock (issue 16): every dependency caseflow declares is pinned there, and
what this environment runs is what it pins (make installs with it as constraints)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            pins[normal(name)] = version.strip()
    return pins


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted.extend(extra)
    names = {normal(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in wanted}
    return names - {"caseflow"}


def test_every_declared_dependency_is_pinned() -> None:
    missing = declared() - set(locked())
    assert not missing, f"not in requirements.lock (run `make lock`): {sorted(missing)}"


def test_this_environment_runs_the_pinned_versions() -> None:
    differ = {
        name: (version, importlib.metadata.version(name))
        for name, version in locked().items()
        if importlib.metadata.version(name) != version
    }
    assert not differ, f"installed versions differ from the lock (pinned, installed): {differ}"
