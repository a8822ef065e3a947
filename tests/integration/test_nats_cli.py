"""``caseflow nats`` against a running nats-server started as ``caseflow up`` starts it
(config and pid file from the credentials folder): an issued credential gets in after the
command's reload, a revoked one is shut out after the next."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from shared.adapters.bus.credentials import CredentialStore
from shared.cli.main import app
from shared.devtools import servers as devservers
from shared.devtools.waiting import wait_until
from tests.services import try_connect, wait_until_accepted

runner = CliRunner()


def caseflow(*args: str) -> tuple[int, str]:
    """Exit code and output, with the error box's frame and line breaks taken out."""
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_issue_and_revoke_reload_the_running_server(tmp_path: Path) -> None:
    folder = tmp_path / "nats"
    code, out = caseflow("nats", "init", "--dir", str(folder))
    assert code == 0, out
    store = CredentialStore(folder)
    port = devservers.free_port()
    proc = devservers.start_nats(
        port, tmp_path / "jetstream", config=store.config_path, pid_file=store.pid_path
    )
    try:
        wait_until(store.pid_path.exists, what="nats-server's pid file", timeout=10)
        url = f"nats://127.0.0.1:{port}"
        code, out = caseflow(
            "nats", "credentials", "--department", "hc_forestry", "--name", "forestry-system",
            "--dir", str(folder), "--nats-url", url,
        )  # fmt: skip
        assert code == 0, out
        assert f"nats-server (pid {proc.pid}) reloaded" in out
        issued = folder / "issued" / "forestry-system.json"
        assert issued.stat().st_mode & 0o777 == 0o600
        file = json.loads(issued.read_text())
        assert file["servers"] == [url] and file["durable"] == "dept_hc_forestry"
        assert file["answer_subject"] == "caseflow.dept.hc_forestry.answers.forestry-system"
        assert file["inbox_prefix"] == "_INBOX.forestry-system"
        assert file["seed"] not in store.register_path.read_text()
        wait_until_accepted(file)

        code, out = caseflow("nats", "list", "--dir", str(folder))
        assert "forestry-system" in out and "hc_forestry" in out and "active" in out

        code, out = caseflow("nats", "revoke", "forestry-system", "--dir", str(folder))
        assert code == 0 and "reloaded" in out, out

        # Until the server says why: a refusal may also reach the client as a connection
        # closed before its -ERR was read, which tells nothing; the next try tells.
        def refused() -> str | None:
            answer = asyncio.run(try_connect(file)) or "let in"
            return answer if "authorization violation" in answer.lower() else None

        wait_until(refused, what="the revoked credential refused by the server", timeout=25)
        code, out = caseflow("nats", "list", "--dir", str(folder))
        assert "revoked" in out
        code, out = caseflow("nats", "server-config", "--dir", str(folder))
        assert code == 0 and file["public_key"] not in out and out.count("nkey:") == 5
    finally:
        devservers.stop_process(proc)


def test_credentials_only_for_authorities_and_under_a_free_name(tmp_path: Path) -> None:
    folder = str(tmp_path / "nats")
    code, out = caseflow("nats", "credentials", "--department", "hc_forestry", "--dir", folder)
    assert code != 0 and "caseflow nats init" in out  # nothing to add it to yet
    assert caseflow("nats", "init", "--dir", folder)[0] == 0
    for args, problem in (
        (("--department", "hc_nowhere"), "no authority 'hc_nowhere'"),
        (("--department", "xuefeng_station"), "is a station, not an authority"),
        (("--department", "hc_forestry", "--name", "relay"), "reserved"),
        (("--department", "hc_forestry", "--name", "Forestry.System"), "can't name"),
    ):
        code, out = caseflow("nats", "credentials", *args, "--dir", folder)
        assert code != 0 and problem in out, out
    assert caseflow("nats", "credentials", "--department", "hc_forestry", "--dir", folder)[0] == 0
    code, out = caseflow("nats", "credentials", "--department", "hc_forestry", "--dir", folder)
    assert code != 0 and "exists" in out  # the default name is taken now
    code, out = caseflow("nats", "revoke", "processing", "--dir", folder)
    assert code != 0 and "start caseflow again to replace its key" in out
