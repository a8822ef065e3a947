"""The image's HEALTHCHECK: ``python -m shared.cli.health [SERVICE]``.

Exit 0 when the service this container runs answers ``/readyz`` on its port, else 1. The
service is the argument, or read from PID 1's command line (``caseflow serve <it>``); a
container that serves nothing (``caseflow migrate``, one-shot) is healthy. Standard library
only: it runs every 15 s and must not cost a second of CPU to import."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {"intake": 8001, "processing": 8002, "notify": 8003, "console": 8000}


def served(cmdline: list[str]) -> str | None:
    """The service a ``caseflow serve <service>`` command line runs, if it is one."""
    if "serve" in cmdline:
        after = cmdline[cmdline.index("serve") + 1 :]
        if after and after[0] in DEFAULT_PORTS:
            return after[0]
    return None


def pid1() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def ready(service: str, timeout: float = 4.0) -> bool:
    port = os.environ.get(f"CASEFLOW_{service.upper()}_PORT") or str(DEFAULT_PORTS[service])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    service = argv[0] if argv else served(pid1())
    if service is None:
        return 0
    if service not in DEFAULT_PORTS:
        print(f"caseflow health: no service {service!r}", file=sys.stderr)
        return 2
    return 0 if ready(service) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
