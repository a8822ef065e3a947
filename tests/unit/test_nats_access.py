"""NATS users and their permissions as data (``shared.adapters.bus.access``): pure, no server."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.adapters.bus.access import (
    Credential,
    Kind,
    inbox_prefix,
    permissions,
    render_authorization,
)

KEY = "U" + "B" * 55


def department(name: str = "forestry-system", authority: str = "hc_forestry") -> Credential:
    return Credential(name=name, kind=Kind.department, authority=authority, public_key=KEY)


def test_a_department_gets_its_authoritys_consumer_and_its_own_answer_subject_only() -> None:
    allowed = permissions(department())
    assert allowed.publish_allow == (
        "$JS.API.CONSUMER.INFO.CASEFLOW_DEPT.dept_hc_forestry",
        "$JS.API.CONSUMER.MSG.NEXT.CASEFLOW_DEPT.dept_hc_forestry",
        "$JS.ACK.CASEFLOW_DEPT.dept_hc_forestry.>",
        "caseflow.dept.hc_forestry.answers.forestry-system",
    )
    assert allowed.subscribe_allow == ("_INBOX.forestry-system.>",)
    assert "caseflow.events.>" in allowed.publish_deny


def test_services_have_their_own_consumers_and_never_publish_events() -> None:
    for name in ("intake", "processing", "notify"):
        allowed = permissions(Credential(name=name, kind=Kind.service, public_key=KEY), ["a_b"])
        assert "caseflow.events.>" in allowed.publish_deny
        assert not [s for s in allowed.publish_allow if s.startswith("caseflow.events")]
        own = (f"_INBOX.{name}.>", "caseflow.internal.relay.wake")
        # processing's replicas tell each other's open worklists of changes (no content)
        changes = ("caseflow.internal.worklists.changed",) if name == "processing" else ()
        assert allowed.subscribe_allow == own + changes
    notify = permissions(Credential(name="notify", kind=Kind.service, public_key=KEY))
    assert "$JS.API.CONSUMER.MSG.NEXT.CASEFLOW_EVENTS.notify" in notify.publish_allow
    # Notify acts on no consumer of processing's; it only reads their figures (the backlog
    # gauges on /metrics: every service sees every consumer's lag).
    acting = [s for s in notify.publish_allow if not s.startswith("$JS.API.CONSUMER.INFO.")]
    assert not [s for s in acting if "processing" in s or "dept" in s]
    assert "$JS.API.CONSUMER.INFO.CASEFLOW_EVENTS.processing-projection" in notify.publish_allow
    assert not [
        s
        for s in notify.publish_allow
        if ".INFO." in s and "CONSUMER.INFO" not in s and not s.endswith("STREAM.INFO.CASEFLOW_DLQ")
    ]
    processing = permissions(
        Credential(name="processing", kind=Kind.service, public_key=KEY), ["hc_forestry"]
    )
    assert (
        "$JS.API.CONSUMER.CREATE.CASEFLOW_DEPT.dept_hc_forestry.caseflow.dept.hc_forestry.requests"
        in processing.publish_allow
    )
    assert "caseflow.dept.*.requests" in processing.publish_allow
    assert "caseflow.dept.*.answers.>" in processing.publish_deny


def test_only_the_relay_publishes_events() -> None:
    relay = permissions(Credential(name="relay", kind=Kind.relay, public_key=KEY))
    assert relay.publish_allow == ("caseflow.events.>",)
    assert relay.subscribe_allow == ("_INBOX.relay.>",)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "intake", "kind": "department", "authority": "hc_forestry"}, "reserved"),
        ({"name": "forestry", "kind": "department"}, "needs its authority"),
        ({"name": "relay", "kind": "relay", "authority": "hc_forestry"}, "only department"),
        ({"name": "mallory", "kind": "service"}, "intake or processing or notify"),
        ({"name": "Forestry.System", "kind": "department", "authority": "x"}, "pattern"),
        ({"name": "forestry>", "kind": "department", "authority": "x"}, "pattern"),
    ],
)
def test_credentials_that_cant_exist_are_refused(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Credential.model_validate({"public_key": KEY, **fields})
    with pytest.raises(ValidationError, match="pattern"):
        Credential(name="x", kind=Kind.relay, public_key="SUABC")


def test_the_config_names_active_users_only_and_never_an_empty_list() -> None:
    from datetime import UTC, datetime

    active = department()
    revoked = department("old-system").model_copy(update={"revoked_at": datetime.now(UTC)})
    config = render_authorization([active, revoked], ["hc_forestry"])
    assert config.count("nkey:") == 1 and "old-system" not in config
    assert "authorization {" in config and '"caseflow.events.>"' in config
    with pytest.raises(ValueError, match="accept nobody"):
        render_authorization([revoked], [])
    with pytest.raises(ValueError):
        inbox_prefix("a.b")
