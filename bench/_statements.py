"""Round trips to the database per case, from each service's ``/metrics``
(``caseflow_db_statements_total``, by kind): the figure issue 14 judges the engine by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

SAMPLE = "caseflow_db_statements_total"

Counts = dict[str, dict[str, float]]
"""Statements sent so far, by service and kind."""


class StatementMeter:
    """Scrapes the services' statement counters (``base_urls``: service → URL) with the
    operator's metrics ``token``."""

    def __init__(self, base_urls: Mapping[str, str], token: str) -> None:
        self.base_urls = dict(base_urls)
        self.headers = {"Authorization": f"Bearer {token}"}

    async def snapshot(self) -> Counts:
        """Each service's counts now."""
        counts: Counts = {}
        async with httpx.AsyncClient(headers=self.headers, timeout=30) as client:
            for name, url in self.base_urls.items():
                response = await client.get(f"{url}/metrics")
                response.raise_for_status()
                counts[name] = {
                    sample.labels["kind"]: sample.value
                    for family in text_string_to_metric_families(response.text)
                    for sample in family.samples
                    if sample.name == SAMPLE
                }
        return counts

    @staticmethod
    def per_case(before: Counts, after: Counts, cases: int) -> dict[str, Any]:
        """Statements per case between two snapshots: in all, per service, per kind."""
        by_service: dict[str, float] = {}
        by_kind: dict[str, float] = {}
        for name, kinds in after.items():
            for kind, value in kinds.items():
                sent = (value - before.get(name, {}).get(kind, 0.0)) / max(cases, 1)
                by_service[name] = by_service.get(name, 0.0) + sent
                by_kind[kind] = by_kind.get(kind, 0.0) + sent
        return {
            "total": round(sum(by_service.values()), 1),
            "by_service": {k: round(v, 1) for k, v in by_service.items()},
            "by_kind": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        }


def describe(name: str, figures: Mapping[str, Any]) -> str:
    """One line for a phase's statements per case."""
    services = ", ".join(f"{k} {v:g}" for k, v in figures["by_service"].items())
    kinds = ", ".join(f"{k} {v:g}" for k, v in figures["by_kind"].items() if v)
    return f"[{name}] database round trips per case: {figures['total']:g} ({services}; {kinds})"
