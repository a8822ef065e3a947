"""The one entry point for people (issue 16): compose's proxy — Caddy with
deploy/caddy/Caddyfile, its upstreams pointed at this test's processes — in front of the
console and the three services under /api/<service>/, each service told its prefix
(ROOT_PATH) as compose tells it, so that /docs works through the proxy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.console.settings import ConsoleSettings
from shared.devtools import httpcalls, waiting
from shared.devtools import servers as devservers
from tests.e2e.test_compose import compose_env, environment, load_compose
from tests.services import (
    ServiceProcess,
    metrics_headers,
    running_stack_each,
    session_keys,
    start_process,
    wait_ready,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
SERVICES = ("intake", "processing", "notify")


def test_the_console_service_is_configured_as_its_settings_read_it() -> None:
    compose = load_compose(compose_env())
    env = environment(compose["services"]["console"])
    prefix = "CASEFLOW_CONSOLE_"
    assert all(key.startswith(prefix) for key in env), env
    fields = {key.removeprefix(prefix).lower(): value for key, value in env.items()}
    assert set(fields) <= set(ConsoleSettings.model_fields), set(fields) - set(
        ConsoleSettings.model_fields
    )
    fields["oidc_client_secret_file"] = __file__  # the mounted secret: any readable file here
    settings = ConsoleSettings.model_validate(fields)
    assert settings.oidc and settings.local_sign_in_key_dir is None  # never the demo's sign-in
    for name in SERVICES:
        assert (
            environment(compose["services"][name])[f"CASEFLOW_{name.upper()}_ROOT_PATH"]
            == f"/api/{name}"
        )
    proxy = compose["services"]["proxy"]
    assert [c["target"] for c in proxy["configs"]] == ["/etc/caddy/Caddyfile"]
    assert compose["configs"]["caddyfile"]["file"] == "./deploy/caddy/Caddyfile"


@pytest.fixture
def behind_the_proxy(
    db_url: str, nats_url: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, ServiceProcess]]]:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("no caddy: `make test` installs Debian's caddy package")
    prefixes = {name: {"ROOT_PATH": f"/api/{name}"} for name in SERVICES}
    with running_stack_each(db_url, nats_url, tmp_path, prefixes) as stack:
        port = devservers.free_port()
        console = start_process(
            "console",
            [sys.executable, "-m", "shared.cli.main", "serve", "console"],
            {
                "CASEFLOW_CONSOLE_PORT": str(port),
                "CASEFLOW_CONSOLE_LOCAL_SIGN_IN_KEY_DIR": str(session_keys().directory),
                **{f"CASEFLOW_CONSOLE_{n.upper()}_URL": stack[n].base_url for n in SERVICES},
            },
            port,
            tmp_path,
        )
        proxy_port, admin_port = devservers.free_port(), devservers.free_port()
        env = {
            **os.environ,
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
            "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
            "CASEFLOW_SITE_ADDRESS": f":{proxy_port}",
            "CASEFLOW_CADDY_ADMIN": f"127.0.0.1:{admin_port}",
            "CASEFLOW_CONSOLE_UPSTREAM": f"127.0.0.1:{port}",
            **{
                f"CASEFLOW_{n.upper()}_UPSTREAM": stack[n].base_url.removeprefix("http://")
                for n in SERVICES
            },
        }
        with open(tmp_path / "caddy.log", "wb") as log:
            proc = subprocess.Popen(
                [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(console)
            base = f"http://127.0.0.1:{proxy_port}"
            waiting.wait_until(
                lambda: httpcalls.get(f"{base}/healthz", timeout=2).status_code == 200,
                what="caddy to answer",
                timeout=30,
                ignoring=(Exception,),
                give_up=waiting.exited(proc, "caddy"),
                detail=lambda: (tmp_path / "caddy.log").read_text(errors="replace")[-2000:],
            )
            yield base, stack
        finally:
            devservers.stop_process(proc)
            console.terminate()


def test_people_reach_the_console_and_every_api_through_one_entry_point(
    behind_the_proxy: tuple[str, dict[str, ServiceProcess]],
) -> None:
    base, _ = behind_the_proxy
    # The console at /: its sign-in, its own assets.
    first = httpcalls.get(f"{base}/", timeout=10)
    assert first.status_code == 303 and first.headers["location"] == "/sign-in"
    page = httpcalls.get(f"{base}/sign-in", timeout=10)
    assert page.status_code == 200 and "登录" in page.text
    assert httpcalls.get(f"{base}/static/console.css", timeout=10).status_code == 200
    for name in SERVICES:
        api = f"{base}/api/{name}"
        assert httpcalls.get(f"{api}/readyz", timeout=10).status_code == 200, name
        # /docs through the proxy: every asset and the OpenAPI document under the prefix.
        docs = httpcalls.get(f"{api}/docs", timeout=10)
        assert docs.status_code == 200, name
        linked = re.findall(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""", docs.text)
        local = [link for link in linked if link.startswith("/")]
        assert f"/api/{name}/openapi.json" in local, local
        for link in local:
            assert link.startswith(f"/api/{name}/"), (name, link)
            assert httpcalls.get(f"{base}{link}", timeout=10).status_code == 200, link
        # /metrics is Prometheus's, not the entry point's, even with the token.
        assert (
            httpcalls.get(f"{api}/metrics", headers=metrics_headers(), timeout=10).status_code
            == 404
        )
