"""Masking personal data (shared.domain.privacy): ID numbers, mobile numbers and e-mail addresses,
as fields and in free text, and the masked view of an event's envelope."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from shared.domain.events import StoredEvent
from shared.domain.identity import id_check_digit
from shared.domain.privacy import MASKED_VIEW, mask_email, mask_text, masked, masked_envelope


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    first17 = draw(st.text(alphabet="0123456789", min_size=17, max_size=17))
    return first17 + id_check_digit(first17)


phones = st.builds(
    lambda second, rest: "1" + second + rest,
    st.sampled_from("3456789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
)
# Text around a number: anything but letters and digits at the seams (a number inside a
# longer run of letters and digits is not one, see below).
seams = st.text(
    st.characters(exclude_categories=("Nd", "Lu", "Ll", "Lt", "Lm", "Lo", "Cs")), max_size=3
)
prose = st.text(max_size=30)


def test_the_masks_keep_only_what_identifies_nobody() -> None:
    assert mask_email("wang.xiuying@example.cn") == "w***@example.cn"
    assert mask_email("a@example.cn") == "***@example.cn"  # one letter would be all of it
    assert mask_email("not an address") == "***"
    text = "申请人 13812345678, ID 11010519491231002X, 邮箱 wang.xiuying@example.cn, 2026000123"
    shown = mask_text(text)
    assert shown == ("申请人 138****5678, ID 110105********002X, 邮箱 w***@example.cn, 2026000123")


@given(prose, seams, id_numbers(), seams, prose)
def test_an_id_number_in_free_text_is_masked(
    before: str, left: str, number: str, right: str, after: str
) -> None:
    shown = mask_text(f"{before} {left}{number}{right} {after}")
    assert number not in shown
    assert f"{number[:6]}********{number[-4:]}" in shown


@given(prose, seams, phones, seams, prose, st.sampled_from(["", "+86", "+86 ", "86", "86-"]))
def test_a_phone_number_in_free_text_is_masked(
    before: str, left: str, phone: str, right: str, after: str, prefix: str
) -> None:
    shown = mask_text(f"{before} {left}{prefix}{phone}{right} {after}")
    assert phone not in shown
    assert f"{phone[:3]}****{phone[-4:]}" in shown


@given(prose, phones, st.sampled_from([" ", "-"]))
def test_a_phone_number_written_in_groups_is_masked(before: str, phone: str, sep: str) -> None:
    grouped = sep.join((phone[:3], phone[3:7], phone[7:]))
    shown = mask_text(f"{before} 电话 {grouped}。")
    assert shown.endswith(f" 电话 {phone[:3]}****{phone[-4:]}。")


@given(prose, st.emails(), prose)
def test_an_email_address_in_free_text_is_masked(before: str, address: str, after: str) -> None:
    local, _, domain = address.rpartition("@")
    assume(local.strip("*"))  # "*@a.cn" looks like a masked address already
    shown = mask_text(f"{before} {address} {after}")
    assert address not in shown
    assert f"***@{domain}" in shown
    keep = local[0] if len(local) > 1 and local[0] != "*" else ""
    assert mask_email(address) == f"{keep}***@{domain}"


def test_a_mailbox_that_is_a_number_is_masked_as_an_address() -> None:
    assert mask_text("QQ 13812345678@qq.com") == "QQ 1***@qq.com"
    assert mask_text("'wang@example.cn'") == "'***@example.cn'"  # a repr in a log line


@given(st.uuids(), st.binary(), st.integers(min_value=0, max_value=10**10))
def test_identifiers_and_hashes_keep_their_digits(
    case_id: uuid.UUID, data: bytes, number: int
) -> None:
    for text in (str(case_id), hashlib.sha256(data).hexdigest(), f"XF-2026-{number:06d}"):
        assert mask_text(text) == text


@given(st.text(st.characters(exclude_categories=["Nd", "Cs"], exclude_characters="@")))
def test_text_without_digits_or_at_signs_is_unchanged(text: str) -> None:
    assert mask_text(text) == text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | phones | id_numbers(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id_number", "phone", "email", "name", "reason", "parties"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_masking_twice_changes_nothing_more(value: Any) -> None:
    once = masked(value)
    assert masked(once) == once


@given(
    id_numbers(),
    phones,
    # A mailbox of only asterisks ("*@A.AC") reads the same masked ("***@A.AC").
    st.emails().filter(lambda address: address.split("@")[0].strip("*") != ""),
)
def test_personal_fields_are_masked_at_any_depth(number: str, phone: str, address: str) -> None:
    payload: dict[str, Any] = {
        "applicant": {"name": "王秀英", "id_number": number, "phone": phone, "email": address},
        "parties": [{"phone": phone, "email": address, "note": f"ID {number}"}],
        "phones": {"phone": [phone]},
    }
    shown = masked(payload)
    text = repr(shown)
    assert number not in text and phone not in text and address not in text
    assert shown["applicant"]["name"] == "王秀英"
    assert shown["applicant"]["email"] == mask_email(address)
    assert shown["phones"]["phone"] == [f"{phone[:3]}****{phone[-4:]}"]
    assert payload["applicant"]["phone"] == phone  # a copy: the original is left alone


def test_a_masked_envelope_says_so_and_keeps_the_stored_hash() -> None:
    now = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    applicant = {"name": "王秀英", "phone": "13812345678", "id_number": "11010519491231002X"}
    event = StoredEvent(
        position=7,
        event_id=uuid.uuid4(),
        case_id=uuid.uuid4(),
        case_kind="application",
        version=1,
        event_type="CaseReceived",
        schema_version=2,
        occurred_at=now,
        recorded_at=now,
        actor_user="li.clerk",
        actor_role="window_clerk",
        actor_station="xuefeng_station",
        authority="banqiao_town",
        delegation_id=None,
        delegation_version=None,
        correlation_id=None,
        causation_id=None,
        payload={"applicant": {**applicant, "email": "wang.xiuying@example.cn"}},
        prev_hash=None,
        hash="ab" * 32,
    )
    envelope = masked_envelope(event)
    assert envelope["personal_data"] == MASKED_VIEW == "masked"
    assert envelope["hash"] == event.hash and envelope["event_id"] == str(event.event_id)
    assert envelope["payload"]["applicant"] == {
        "name": "王秀英",
        "phone": "138****5678",
        "id_number": "110105********002X",
        "email": "w***@example.cn",
    }
    assert event.payload["applicant"]["phone"] == "13812345678"  # the event is untouched
    assert StoredEvent.from_envelope(envelope).event_id == event.event_id


def test_numbers_in_full_width_digits_are_masked_in_free_text_too() -> None:
    assert "１３８１２３４５６７８" not in mask_text("电话 １３８１２３４５６７８")
    full_width_id = "１１０１０５１９４９１２３１００２Ｘ"
    assert full_width_id not in mask_text(f"身份证 {full_width_id}")


def test_numbers_as_people_write_them_are_masked() -> None:
    """Spellings an outside probe found in clear: a label right before the number, ID
    numbers in groups, the 15-digit ID numbers of before 1999, phones with dots or
    brackets. Identifiers inside longer runs of letters and digits keep their digits."""
    for text, shown in (
        ("ID61058119680312002X", "ID610581********002X"),
        ("身份证号sfz:61058119680312002X", "身份证号sfz:610581********002X"),
        ("tel13891234567", "tel138****4567"),
        ("Mobile.13891234567", "Mobile.138****4567"),
        ("610581 19680312 002X", "610581********002X"),
        ("610581-1968-0312-002X", "610581********002X"),
        ("老身份证 610581680312002。", "老身份证 610581******002。"),
        ("138.9123.4567", "138****4567"),
        ("(138)9123-4567", "(138)****4567"),
        ("139\u30001234\u30005678", "139****5678"),  # an IME's full-width space
        ("139－1234－5678", "139****5678"),
        ("139、1234、5678", "139****5678"),
        ("139\u00a01234\u00a05678", "139****5678"),
        ("610581\u300019851212\u30004564", "610581********4564"),
        ("610581.1985.1212.4564", "610581********4564"),
        ("IDNO610581198512124564", "IDNO610581********4564"),
        ("金额 1,234,567.89 元", "金额 1,234,567.89 元"),
        ("ab13812345678", "ab13812345678"),  # the tail of a hex digest
        ("XID61058119680312002X", "XID61058119680312002X"),  # not a label: a token
        ("6222 0212 3456 7890 123", "6222 0212 3456 7890 123"),  # a bank card's groups
    ):
        assert mask_text(text) == shown, text
        assert mask_text(shown) == shown
