"""Delegations: instrument validation, the fold, the commands, and check() in every branch."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from shared.adapters.delegations import SeedError, load_seed_delegations, seed_problems
from shared.domain.catalogue import Catalogue, Completion, load_catalogue
from shared.domain.delegation import (
    CASE_KIND,
    CHINA_TZ,
    DelegationError,
    DelegationRefusal,
    DelegationState,
    DelegationStatus,
    Grant,
    IllegalDelegationChange,
    Instrument,
    InvalidAmendment,
    InvalidInstrument,
    Mode,
    Power,
    RefusalReason,
    check,
    decide_amend,
    decide_publish,
    decide_resume,
    decide_revoke,
    decide_suspend,
    delegation_case_id,
    fold_delegation,
)
from shared.domain.events import Actor, NewEvent, StoredEvent
from shared.domain.orgs import load_organisations

OFFICER = Actor(user="li.officer", role="department_officer", station="hc_hrss")
ALL = [Power.RECEIVE, Power.ACCEPT, Power.REVIEW, Power.DECIDE, Power.DELIVER]
PUBLISHED = date(2021, 11, 10)
LATER = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in China


def instrument(**changes: Any) -> Instrument:
    fields: dict[str, Any] = {
        "code": "hrss-xuefeng-2021",
        "delegator": "hc_hrss",
        "delegate": "xuefeng_station",
        "mode": Mode.ENTRUSTED,
        "items": ["pension_enrolment", "funeral_subsidy"],
        "powers": ALL,
        "legal_basis": "《中华人民共和国行政许可法》第二十四条",
        "document_number": "韩人社发〔2021〕45号",
        "published_on": PUBLISHED,
        "valid_from": date(2021, 11, 14),
        "valid_until": None,
    }
    fields.update(changes)
    return Instrument(**fields)


def china(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ)


class Stream:
    """An instrument's stream without a database: decided events become stored ones."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    @property
    def state(self) -> DelegationState | None:
        return fold_delegation(self.events)

    def do(self, decide: Callable[[DelegationState | None], list[NewEvent]]) -> DelegationState:
        for new in decide(self.state):
            assert new.occurred_at is not None
            self.events.append(
                StoredEvent(
                    position=len(self.events) + 1,
                    event_id=new.event_id,
                    case_id=uuid.uuid4() if not self.events else self.events[0].case_id,
                    case_kind=CASE_KIND,
                    version=len(self.events) + 1,
                    event_type=new.event_type,
                    schema_version=new.schema_version,
                    occurred_at=new.occurred_at,
                    recorded_at=new.occurred_at,
                    actor_user=new.actor.user,
                    actor_role=new.actor.role,
                    actor_station=new.actor.station,
                    authority=new.authority,
                    delegation_id=new.delegation_id,
                    delegation_version=new.delegation_version,
                    correlation_id=new.correlation_id,
                    causation_id=new.causation_id,
                    payload=new.payload,
                    prev_hash=None,
                    hash="0" * 64,
                )
            )
        state = self.state
        assert state is not None
        return state


def published(inst: Instrument | None = None, at: datetime | None = None) -> Stream:
    stream = Stream()
    moment = at or china(2021, 11, 12)
    stream.do(lambda s: decide_publish(s, inst or instrument(), actor=OFFICER, at=moment))
    return stream


def suspend(stream: Stream, at: datetime, reason: str = "audit of the station") -> None:
    stream.do(lambda s: decide_suspend(s, s.code if s else "", reason=reason, actor=OFFICER, at=at))


def resume(stream: Stream, at: datetime, reason: str = "audit passed") -> None:
    stream.do(lambda s: decide_resume(s, s.code if s else "", reason=reason, actor=OFFICER, at=at))


def revoke(stream: Stream, at: datetime, reason: str = "station merged") -> None:
    stream.do(lambda s: decide_revoke(s, s.code if s else "", reason=reason, actor=OFFICER, at=at))


def ask(
    delegations: list[DelegationState],
    at: datetime,
    *,
    org: str = "xuefeng_station",
    authority: str = "hc_hrss",
    item: str = "pension_enrolment",
    power: Power = Power.ACCEPT,
) -> Grant | DelegationRefusal:
    return check(
        delegations, org=org, competent_authority=authority, item_code=item, power=power, at=at
    )


def refused(verdict: Grant | DelegationRefusal, reason: RefusalReason) -> DelegationRefusal:
    assert isinstance(verdict, DelegationRefusal), verdict
    assert verdict.reason is reason, verdict
    return verdict


# Instruments ------------------------------------------------------------------------


def test_a_valid_instrument_keeps_its_fields() -> None:
    inst = instrument()
    assert inst.delegator == "hc_hrss"
    assert inst.powers == ALL
    assert inst.in_force_on(date(2021, 11, 14))
    assert not inst.in_force_on(date(2021, 11, 13))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"delegate": "hc_hrss"}, "can't delegate to itself"),
        ({"items": []}, "at least 1 item"),
        ({"items": ["pension_enrolment", "pension_enrolment"]}, "listed twice"),
        ({"powers": []}, "at least 1 item"),
        ({"powers": [Power.RECEIVE, Power.RECEIVE]}, "listed twice"),
        ({"mode": Mode.RECEIVE_ONLY}, "exactly the power 'receive'"),
        ({"valid_until": date(2021, 11, 13)}, "valid_until is before valid_from"),
        ({"document_number": "45号"}, "string should match pattern"),
        ({"document_number": "韩人社发[2021]45号"}, "string should match pattern"),
        ({"document_number": "韩人社发〔2022〕45号"}, "year is after the publication"),
        ({"items": ["Pension"]}, "not an item code"),
        ({"code": "X"}, "string should match pattern"),
    ],
)
def test_invalid_instruments_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        instrument(**changes)
    assert message.lower() in str(err.value).lower()


def test_receive_only_with_just_receive_is_valid() -> None:
    inst = instrument(mode=Mode.RECEIVE_ONLY, powers=[Power.RECEIVE])
    assert inst.mode is Mode.RECEIVE_ONLY


def test_case_ids_are_stable_per_code() -> None:
    assert delegation_case_id("a-b-c") == delegation_case_id("a-b-c")
    assert delegation_case_id("a-b-c") != delegation_case_id("a-b-d")


# Commands and the fold --------------------------------------------------------------


def test_fold_gives_versions_statuses_and_history() -> None:
    stream = published()
    amended = instrument(items=["pension_enrolment"], published_on=date(2025, 1, 2))
    stream.do(
        lambda s: decide_amend(
            s, amended, reason="funeral subsidy back to town", actor=OFFICER, at=china(2025, 1, 3)
        )
    )
    suspend(stream, china(2025, 2, 1))
    resume(stream, china(2025, 3, 1))
    revoke(stream, china(2025, 4, 1))
    state = stream.state
    assert state is not None
    assert state.version == 5
    assert state.status is DelegationStatus.REVOKED
    assert state.instrument == amended
    assert [r.version for r in state.history] == [1, 2, 3, 4, 5]
    assert [r.status.value for r in state.history] == [
        "active",
        "active",
        "suspended",
        "active",
        "revoked",
    ]
    assert [r.reason for r in state.history] == [
        None,
        "funeral subsidy back to town",
        "audit of the station",
        "audit passed",
        "station merged",
    ]
    assert [r.version for r in state.versions()] == [1, 2]
    assert state.history[0].actor == OFFICER
    # The publication takes effect at the start of its publication day in China.
    assert state.published_at == china(2021, 11, 10)
    assert state.as_json()["history"][1]["instrument"]["items"] == ["pension_enrolment"]


def test_as_of_replays_up_to_a_moment() -> None:
    stream = published()
    suspend(stream, china(2025, 2, 1))
    state = stream.state
    assert state is not None
    assert state.as_of(china(2021, 11, 9, 23, 59)) is None
    before = state.as_of(china(2025, 1, 31, 23, 59))
    assert before is not None
    assert (before.version, before.status) == (1, DelegationStatus.ACTIVE)
    assert state.as_of(china(2025, 2, 1)) is state
    with pytest.raises(ValueError, match="timezone-aware"):
        state.as_of(datetime(2025, 2, 1))


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (["DelegationSuspended"], "can't follow nothing"),
        (["DelegationPublished", "DelegationResumed"], "can't follow active"),
        (["DelegationPublished", "DelegationRevoked", "DelegationSuspended"], "follow revoked"),
        (["DelegationPublished", "CaseAccepted"], "not an event of a delegation"),
    ],
)
def test_fold_refuses_a_corrupt_stream(events: list[str], message: str) -> None:
    good = published().events[0]
    stored = [
        StoredEvent(
            **{
                **{f: getattr(good, f) for f in good.__dataclass_fields__},
                "version": n,
                "event_type": t,
                "payload": good.payload if t == "DelegationPublished" else {"reason": "why not"},
            }
        )
        for n, t in enumerate(events, 1)
    ]
    with pytest.raises(DelegationError, match=message):
        fold_delegation(stored)


def test_fold_refuses_another_case_kind() -> None:
    event = published().events[0]
    other = StoredEvent(**{**{f: getattr(event, f) for f in event.__dataclass_fields__}})
    object.__setattr__(other, "case_kind", "application")
    with pytest.raises(DelegationError, match="not a delegation"):
        fold_delegation([other])


def test_publish_refuses_a_second_publication_and_a_future_date() -> None:
    stream = published()
    with pytest.raises(IllegalDelegationChange, match="published already"):
        decide_publish(stream.state, instrument(), actor=OFFICER, at=LATER)
    future = instrument(published_on=date(2026, 3, 3), valid_from=date(2026, 3, 3))
    with pytest.raises(IllegalDelegationChange, match="in the future"):
        decide_publish(None, future, actor=OFFICER, at=LATER)


def test_a_new_instrument_cant_reach_back_before_its_publication() -> None:
    early = instrument(valid_from=date(2021, 11, 9))
    with pytest.raises(InvalidInstrument, match="before it is published"):
        decide_publish(None, early, actor=OFFICER, at=LATER)


def test_the_publication_event_names_the_delegator_and_actor() -> None:
    (event,) = decide_publish(None, instrument(), actor=OFFICER, at=LATER)
    assert event.event_type == "DelegationPublished"
    assert event.authority == "hc_hrss"
    assert event.actor == OFFICER
    assert event.occurred_at == china(2021, 11, 10)
    assert event.payload["instrument"]["document_number"] == "韩人社发〔2021〕45号"


def test_resume_needs_a_suspension_and_suspend_an_active_instrument() -> None:
    stream = published()
    state = stream.state
    with pytest.raises(IllegalDelegationChange, match="not suspended"):
        decide_resume(state, "hrss-xuefeng-2021", reason="why", actor=OFFICER, at=LATER)
    suspend(stream, china(2025, 2, 1))
    with pytest.raises(IllegalDelegationChange, match="suspended already"):
        decide_suspend(stream.state, "hrss-xuefeng-2021", reason="x2", actor=OFFICER, at=LATER)


def test_nothing_follows_a_revocation() -> None:
    stream = published()
    revoke(stream, china(2025, 2, 1))
    state = stream.state
    code = "hrss-xuefeng-2021"
    for decide in (decide_suspend, decide_resume, decide_revoke):
        with pytest.raises(IllegalDelegationChange, match="revoked"):
            decide(state, code, reason="again", actor=OFFICER, at=LATER)
    with pytest.raises(IllegalDelegationChange, match="revoked"):
        decide_amend(
            state, instrument(items=["pension_enrolment"]), reason="x", actor=OFFICER, at=LATER
        )


def test_commands_on_an_unknown_instrument_are_refused() -> None:
    with pytest.raises(IllegalDelegationChange, match="no delegation nope-1"):
        decide_suspend(None, "nope-1", reason="why", actor=OFFICER, at=LATER)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"delegator": "hc_health"}, "can't change the delegator"),
        ({"delegate": "longmen_station"}, "can't change the delegate"),
        ({}, "changes nothing"),
        (
            {"published_on": date(2021, 11, 1), "document_number": "韩人社发〔2021〕40号"},
            "before the text",
        ),
    ],
)
def test_illegal_amendments_are_refused(changes: dict[str, Any], message: str) -> None:
    stream = published()
    with pytest.raises(InvalidAmendment, match=message):
        decide_amend(stream.state, instrument(**changes), reason="x" * 5, actor=OFFICER, at=LATER)


def test_a_change_cant_take_effect_before_the_last_one() -> None:
    stream = published()
    suspend(stream, china(2025, 2, 1))
    with pytest.raises(IllegalDelegationChange, match="can't take effect earlier"):
        decide_resume(
            stream.state, "hrss-xuefeng-2021", reason="x" * 5, actor=OFFICER, at=china(2025, 1, 1)
        )


def test_reasons_are_mandatory() -> None:
    stream = published()
    with pytest.raises(ValidationError, match="reason"):
        decide_suspend(stream.state, "hrss-xuefeng-2021", reason="", actor=OFFICER, at=LATER)


# check() ----------------------------------------------------------------------------


def test_the_competent_authority_acts_itself_without_a_delegation() -> None:
    assert ask([], LATER, org="hc_hrss") == Grant("hc_hrss", None, None)


def test_entrusted_acts_in_the_delegators_name() -> None:
    state = published().state
    assert state is not None
    assert ask([state], LATER) == Grant("hc_hrss", "hrss-xuefeng-2021", 1)
    grant = ask([state], LATER)
    assert isinstance(grant, Grant)
    event = NewEvent(event_type="CaseAccepted", **grant.event_fields())
    assert (event.authority, event.delegation_id, event.delegation_version) == (
        "hc_hrss",
        "hrss-xuefeng-2021",
        1,
    )


def test_authorised_acts_in_the_delegates_own_name() -> None:
    state = published(instrument(mode=Mode.AUTHORISED)).state
    assert state is not None
    assert ask([state], LATER) == Grant("xuefeng_station", "hrss-xuefeng-2021", 1)


def test_receive_only_grants_receiving_and_nothing_else() -> None:
    inst = instrument(mode=Mode.RECEIVE_ONLY, powers=[Power.RECEIVE], delegate="longmen_station")
    state = published(inst).state
    assert state is not None
    assert ask([state], LATER, org="longmen_station", power=Power.RECEIVE) == Grant(
        "hc_hrss", "hrss-xuefeng-2021", 1
    )
    refusal = refused(
        ask([state], LATER, org="longmen_station", power=Power.ACCEPT),
        RefusalReason.OUTSIDE_DELEGATION,
    )
    assert "only receive, not accept" in refusal.message


def test_a_power_not_delegated_is_refused() -> None:
    inst = instrument(powers=[Power.RECEIVE, Power.ACCEPT, Power.REVIEW, Power.DELIVER])
    state = published(inst).state
    assert state is not None
    refused(ask([state], LATER, power=Power.DECIDE), RefusalReason.OUTSIDE_DELEGATION)
    assert isinstance(ask([state], LATER, power=Power.REVIEW), Grant)


def test_an_item_not_listed_and_another_org_are_refused() -> None:
    state = published().state
    assert state is not None
    refused(ask([state], LATER, item="logging_permit"), RefusalReason.OUTSIDE_DELEGATION)
    refusal = refused(ask([state], LATER, org="longmen_station"), RefusalReason.OUTSIDE_DELEGATION)
    assert (
        refusal.message == "longmen_station holds no delegation from hc_hrss for pension_enrolment"
    )
    # The item's competent authority is another body: this instrument is no help.
    refused(ask([state], LATER, authority="hc_health"), RefusalReason.OUTSIDE_DELEGATION)


def test_no_sub_delegation() -> None:
    to_town = published(
        instrument(code="hrss-banqiao-2021", delegate="banqiao_town", mode=Mode.ENTRUSTED)
    ).state
    town_to_station = published(
        instrument(
            code="banqiao-xuefeng-2021",
            delegator="banqiao_town",
            document_number="板政发〔2021〕12号",
        )
    ).state
    assert to_town is not None and town_to_station is not None
    both = [to_town, town_to_station]
    # The town holds the city's delegation…
    assert ask(both, LATER, org="banqiao_town") == Grant("hc_hrss", "hrss-banqiao-2021", 1)
    # …but can't pass it on.
    refusal = refused(ask(both, LATER), RefusalReason.OUTSIDE_DELEGATION)
    assert "sub-delegation is not allowed" in refusal.message
    assert refusal.delegation_code == "banqiao-xuefeng-2021"
    # The town's delegation of its own items does grant.
    assert ask(both, LATER, authority="banqiao_town") == Grant(
        "banqiao_town", "banqiao-xuefeng-2021", 1
    )


def test_valid_at_the_moment_of_the_action_around_a_suspension() -> None:
    stream = published()
    suspend(stream, china(2025, 2, 1, 9, 30))
    resume(stream, china(2025, 2, 10, 8, 0))
    state = stream.state
    assert state is not None
    assert ask([state], china(2025, 2, 1, 9, 29)) == Grant("hc_hrss", "hrss-xuefeng-2021", 1)
    refusal = refused(ask([state], china(2025, 2, 1, 9, 30)), RefusalReason.DELEGATION_SUSPENDED)
    assert (refusal.delegation_code, refusal.delegation_version) == ("hrss-xuefeng-2021", 2)
    refused(ask([state], china(2025, 2, 9, 17, 0)), RefusalReason.DELEGATION_SUSPENDED)
    assert ask([state], china(2025, 2, 10, 8, 0)) == Grant("hc_hrss", "hrss-xuefeng-2021", 3)


def test_revoked_refuses_from_the_revocation_on() -> None:
    stream = published()
    revoke(stream, china(2025, 6, 1, 12, 0))
    state = stream.state
    assert state is not None
    assert isinstance(ask([state], china(2025, 6, 1, 11, 59)), Grant)
    refusal = refused(ask([state], china(2025, 6, 1, 12, 0)), RefusalReason.DELEGATION_REVOKED)
    assert "was revoked" in refusal.message


def test_the_validity_period_counts_in_china_dates() -> None:
    state = published(instrument(valid_until=date(2025, 6, 30))).state
    assert state is not None
    # 2025-06-30 23:59 in China is 15:59 UTC; 16:00 UTC is already 1 July there.
    assert isinstance(ask([state], datetime(2025, 6, 30, 15, 59, tzinfo=UTC)), Grant)
    refusal = refused(
        ask([state], datetime(2025, 6, 30, 16, 0, tzinfo=UTC)), RefusalReason.DELEGATION_EXPIRED
    )
    assert "expired after 2025-06-30" in refusal.message
    # Published on the 10th, in force from the 14th.
    refusal = refused(ask([state], china(2021, 11, 13, 23, 59)), RefusalReason.DELEGATION_EXPIRED)
    assert "in force only from 2021-11-14" in refusal.message
    assert isinstance(ask([state], china(2021, 11, 14)), Grant)


def test_before_publication_there_is_no_delegation() -> None:
    state = published().state
    assert state is not None
    refused(ask([state], china(2021, 11, 9, 23, 0)), RefusalReason.OUTSIDE_DELEGATION)


def test_an_amendment_counts_from_its_moment_and_carries_its_version() -> None:
    stream = published(instrument(items=["pension_enrolment"]))
    wider = instrument(published_on=date(2025, 3, 1), document_number="韩人社发〔2025〕7号")
    stream.do(
        lambda s: decide_amend(
            s, wider, reason="funeral subsidy added", actor=OFFICER, at=china(2025, 3, 1, 9)
        )
    )
    state = stream.state
    assert state is not None
    before = ask([state], china(2025, 3, 1, 8, 59), item="funeral_subsidy")
    refused(before, RefusalReason.OUTSIDE_DELEGATION)
    after = ask([state], china(2025, 3, 1, 9), item="funeral_subsidy")
    assert after == Grant("hc_hrss", "hrss-xuefeng-2021", 2)
    # The older item is granted under the version in force at each moment.
    assert ask([state], china(2025, 2, 1)) == Grant("hc_hrss", "hrss-xuefeng-2021", 1)


def test_a_live_instrument_wins_over_a_revoked_one_and_reasons_are_ranked() -> None:
    old = published(instrument(code="hrss-xuefeng-2019", document_number="韩人社发〔2021〕1号"))
    revoke(old, china(2024, 1, 1))
    new = published()
    suspended = published(
        instrument(code="hrss-xuefeng-2024", document_number="韩人社发〔2021〕9号")
    )
    suspend(suspended, china(2024, 6, 1))
    states = [s.state for s in (old, new, suspended)]
    assert all(states)
    live = [s for s in states if s is not None]
    assert ask(live, LATER) == Grant("hc_hrss", "hrss-xuefeng-2021", 1)
    # Without the live one: the suspended one explains best (it may resume).
    refused(ask([live[0], live[2]], LATER), RefusalReason.DELEGATION_SUSPENDED)
    refused(ask([live[0]], LATER), RefusalReason.DELEGATION_REVOKED)


def test_authorised_is_preferred_when_two_instruments_grant() -> None:
    entrusted = published().state
    authorised = published(
        instrument(
            code="hrss-xuefeng-auth", mode=Mode.AUTHORISED, document_number="韩人社发〔2021〕46号"
        )
    ).state
    assert entrusted is not None and authorised is not None
    assert ask([entrusted, authorised], LATER) == Grant("xuefeng_station", "hrss-xuefeng-auth", 1)


def test_check_needs_an_aware_moment() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ask([], datetime(2025, 1, 1) + timedelta(hours=1))


# Seed instruments -------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def seed_states() -> list[DelegationState]:
    states = []
    for inst in load_seed_delegations():
        state = published(inst, LATER).state
        assert state is not None
        states.append(state)
    return states


def test_the_seed_fits_the_catalogue_and_organisations(catalogue: Catalogue) -> None:
    orgs = load_organisations()
    seed = load_seed_delegations(catalogue=catalogue, organisations=orgs)
    assert seed_problems(seed, catalogue, orgs) == []
    assert {i.delegate for i in seed} == {"xuefeng_station", "longmen_station", "banqiao_town"}


def test_whoever_a_case_is_forwarded_to_may_decide_it(catalogue: Catalogue) -> None:
    states = seed_states()
    for item in catalogue.published():
        if item.forward_to is None:
            continue
        verdict = ask(
            states,
            LATER,
            org=item.forward_to,
            item=item.code,
            authority=item.authority,
            power=Power.DECIDE,
        )
        assert isinstance(verdict, Grant), (item.code, item.forward_to, verdict)
        assert verdict.authority == item.authority


def test_xuefeng_holds_every_item_with_the_powers_its_completion_needs(
    catalogue: Catalogue,
) -> None:
    states = seed_states()
    forwarding_powers = [Power.RECEIVE, Power.ACCEPT, Power.REVIEW, Power.DELIVER]
    for item in catalogue.published():
        for power in Power:
            verdict = ask(
                states,
                LATER,
                item=item.code,
                authority=item.authority,
                power=power,
            )
            expected = item.completion is Completion.station or power in forwarding_powers
            assert isinstance(verdict, Grant) is expected, (item.code, power, verdict)
            if isinstance(verdict, Grant):
                assert verdict.authority == item.authority  # entrusted: the city's name


def test_longmen_holds_a_narrower_set(catalogue: Catalogue) -> None:
    states = seed_states()

    def granted(org: str, power: Power) -> set[str]:
        return {
            item.code
            for item in catalogue.published()
            if isinstance(
                ask(states, LATER, org=org, item=item.code, authority=item.authority, power=power),
                Grant,
            )
        }

    for power in Power:
        assert granted("longmen_station", power) < granted("xuefeng_station", power)
    assert "medical_insurance_enrolment" in granted("longmen_station", Power.RECEIVE)
    assert "medical_insurance_enrolment" not in granted("longmen_station", Power.ACCEPT)
    assert "pension_enrolment" in granted("longmen_station", Power.DECIDE)
    # Longmen opened on 2022-06-01.
    refused(
        ask(states, china(2022, 5, 31, 12), org="longmen_station"),
        RefusalReason.DELEGATION_EXPIRED,
    )


def test_a_bad_seed_file_is_refused(tmp_path: Path, catalogue: Catalogue) -> None:
    (tmp_path / "delegations.yaml").write_text("delegations: [{code: x}]", encoding="utf-8")
    with pytest.raises(SeedError, match="not valid"):
        load_seed_delegations(tmp_path)
    one = instrument().model_dump(mode="json")
    (tmp_path / "delegations.yaml").write_text(
        yaml.safe_dump({"delegations": [one, one]}, allow_unicode=True), encoding="utf-8"
    )
    with pytest.raises(SeedError, match="codes used twice: hrss-xuefeng-2021"):
        load_seed_delegations(tmp_path)
    stray = instrument(delegator="banqiao_town", document_number="板政发〔2021〕1号")
    (tmp_path / "delegations.yaml").write_text(
        yaml.safe_dump({"delegations": [stray.model_dump(mode="json")]}, allow_unicode=True),
        encoding="utf-8",
    )
    with pytest.raises(SeedError, match="pension_enrolment's competent authority is hc_hrss"):
        load_seed_delegations(tmp_path, catalogue=catalogue, organisations=load_organisations())
