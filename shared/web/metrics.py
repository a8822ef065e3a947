"""``/metrics`` for operators only: Prometheus scrapes it with a bearer token.

The token is read from a file (``CASEFLOW_<SERVICE>_METRICS_TOKEN_FILE``, so that compose
can hand it over as a secret and Prometheus reads the same file as its
``bearer_token_file``); ``caseflow up`` creates one under ``var/keys``. Without a token the
answer is 401, with a wrong one 403; a service whose token file is missing or empty
refuses every scrape (and says which setting to fix), never serves the metrics to anyone.
The file is read at each scrape, so a new token needs no restart.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

import structlog
from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = structlog.get_logger("caseflow.metrics")

DEFAULT_METRICS_TOKEN_FILE = Path("var/keys/metrics-token")
_SCHEME = "bearer "


def ensure_metrics_token(path: Path = DEFAULT_METRICS_TOKEN_FILE) -> tuple[Path, bool]:
    """Create a random token in ``path`` (owner-only) unless one is there; ``(path,
    created)``."""
    if path.is_file() and path.read_text(encoding="ascii").strip():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path, True


def _expected(request: Request) -> tuple[str | None, str]:
    """The configured token (None if there is none) and the setting that names it."""
    runtime = getattr(request.app.state, "runtime", None)
    settings = getattr(runtime, "settings", None)
    prefix = str(getattr(settings, "model_config", {}).get("env_prefix", "CASEFLOW_"))
    setting = f"{prefix}METRICS_TOKEN_FILE"
    path: Path | None = getattr(settings, "metrics_token_file", None)
    if path is None:
        return None, setting
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        log.error("can't read the metrics token", setting=setting, error=type(err).__name__)
        return None, setting
    return token or None, setting


def _refused(status: int, detail: str) -> Response:
    from shared.web.http import problem  # shared.web.http installs this route

    response = problem(status, detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="caseflow-metrics"'
    return response


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics, for the holder of the token."""
    given = request.headers.get("authorization", "")
    if not given.lower().startswith(_SCHEME) or not given[len(_SCHEME) :].strip():
        return _refused(
            401, "metrics are for operators: send the metrics token as 'Authorization: Bearer …'"
        )
    expected, setting = _expected(request)
    if expected is None:
        return _refused(
            403, f"this service has no metrics token configured: set {setting} to its file"
        )
    if not hmac.compare_digest(given[len(_SCHEME) :].strip().encode(), expected.encode()):
        return _refused(403, "that is not this service's metrics token")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
