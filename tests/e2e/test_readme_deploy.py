"""The README's Docker deployment, run as written up to `docker compose up` (no Docker
engine runs here; tests/e2e/test_compose.py runs the compose services' commands instead):
the commands make every secret file the example .env names, and compose, given that .env,
finds them all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_compose import env_file, load_compose

ROOT = Path(__file__).resolve().parents[2]


def docker_block() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"or with Docker:\n\n```sh\n(.*?)```", readme, re.S)
    assert block, "the README's Docker commands are gone"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readmes_docker_commands_make_what_compose_needs(tmp_path: Path) -> None:
    for name in (".env.example", "docker-compose.yml"):  # run from the repository
        shutil.copy(ROOT / name, tmp_path / name)
    lines = docker_block()
    assert lines[-1].startswith("docker compose up")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in lines[:-1]:
        if line.lstrip().startswith("#"):
            continue
        done = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (line, done.stdout, done.stderr)
    # What the comment asks the operator to write by hand (their own secrets):
    (tmp_path / "keys" / "sms-secret-key").write_text("the gateway's key\n")
    (tmp_path / "keys" / "oidc-client-secret").write_text("the client's secret\n")
    settings = env_file(tmp_path / ".env")
    compose = load_compose(settings)
    for name, secret in compose["secrets"].items():
        path = (
            (tmp_path / secret["file"]).resolve()
            if not secret["file"].startswith("/")
            else Path(secret["file"])
        )
        assert path.is_file() or path == Path("/dev/null"), (
            f"secret {name}: {secret['file']} is missing"
        )
    assert (tmp_path / "nats-users" / "nats-server.conf").is_file()
    for config in compose["configs"].values():
        if config["file"].startswith(str(settings.get("CASEFLOW_NATS_DIR", ""))):
            assert (tmp_path / config["file"]).is_file(), config
