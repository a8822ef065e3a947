"""The tables of the ``statistics`` and ``delegation_usage`` projections, on the log's
metadata (migration 0008 creates them).

Both hold counters and sums per day (the date in China of each event's ``occurred_at``),
so a report over any period is a sum over its days, and applying the log in any batches
adds up to the same rows. Key columns are never NULL: a missing item or power is ``''``.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.adapters.tables.eventlog import metadata

STATISTICS_KEYS = ("station", "day", "case_kind", "item")
STATISTICS_MEASURES = (
    "received",
    "accepted",
    "corrections",
    "not_accepted",
    "withdrawn",
    "forwarded",
    "completed_at_station",
    "completed_upstream",
    "approved",
    "rejected",
    "delivered",
    "timed",
    "on_time_committed",
    "on_time_legal",
    "working_days",
    "ratings",
    "rating_sum",
    "poor_ratings",
    "people_helped",
    "cases_solved",
    "backfilled",
    "undated_decisions",
)
"""What is counted per station, day, case kind and item:

- ``received``: cases opened (applications received, mediations registered, sessions
  planned, assistance and police assistance requested) and, for the kind ``reception``,
  visitors logged (the item is the visit's purpose);
- ``accepted`` (受理, also deemed), ``corrections`` (一次性告知), ``not_accepted``,
  ``withdrawn``, ``forwarded`` (sent upstream), ``delivered`` (送达);
- ``completed_at_station``: decided at the station (approved or rejected there), or a
  matter done (mediation concluded, session held, assistance or police assistance given);
  ``completed_upstream``: decided by the authority the case was forwarded to;
- ``approved``, ``rejected``;
- ``timed``: decisions with a working-day clock; of them ``on_time_committed`` and
  ``on_time_legal`` were within the committed (承诺) and legal (法定) limit, extension
  included; ``working_days``: the working days they used, summed;
- ``ratings``, ``rating_sum`` (scores 1–5), ``poor_ratings`` (score 2 or less);
- ``people_helped``: people an assistance matter helped, counted when it is given;
  ``cases_solved``: police assistance given where the police case was solved (协助破案);
- ``backfilled``: acts (and visits) entered later from a paper record (补录: recorded well
  after they happened); ``undated_decisions``: timed decisions entered *without* their
  moment on a case whose earlier acts were backfilled — their working days run to the day
  they were entered, which is why such a period's on-time rates are low.

For the kind ``visitor`` the item is a person's one-way key and ``received`` their visits
that day: the people received in a period are the distinct keys of its days.
"""


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


station_statistics = sa.Table(
    "station_statistics",
    metadata,
    sa.Column("station", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("case_kind", sa.String(64), primary_key=True),
    sa.Column("item", sa.String(64), primary_key=True),
    *(_counter(name) for name in STATISTICS_MEASURES),
    sa.Index("ix_station_statistics_day", "day"),
)

USAGE_KEYS = ("delegation_id", "delegation_version", "station", "item", "power", "day")
USAGE_MEASURES = ("actions", "refused")
"""Actions recorded under the delegation version, and refused attempts citing it."""

delegation_usage = sa.Table(
    "delegation_usage",
    metadata,
    sa.Column("delegation_id", sa.String(64), primary_key=True),
    sa.Column("delegation_version", sa.Integer(), primary_key=True),
    sa.Column("station", sa.String(64), primary_key=True),
    sa.Column("item", sa.String(64), primary_key=True),
    sa.Column("power", sa.String(16), primary_key=True),
    sa.Column("day", sa.Date(), primary_key=True),
    *(_counter(name) for name in USAGE_MEASURES),
    sa.Index("ix_delegation_usage_station_day", "station", "day"),
)
