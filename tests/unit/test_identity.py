"""Citizen ID numbers (GB 11643), mobile numbers, person names and free text as they must
be, and masked forms of ID and phone numbers (free text: test_privacy.py)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.domain.identity import (
    MAX_AGE_YEARS,
    division_code_exists,
    division_codes,
    id_check_digit,
    id_number_problem,
    mask_id_number,
    mask_phone,
    person_name_problem,
    phone_problem,
    text_problem,
)
from shared.domain.privacy import mask_text

TODAY = date(2026, 12, 3)
CODES = sorted(division_codes())
DIGITS = "0123456789"
# Decimal digits that are not ASCII: full-width, Arabic-Indic, Devanagari, mathematical.
FOREIGN_DIGITS = "０１２３４５６７８９٠١٢٣٤٥٦٧٨٩०१२३४५६७८९𝟎𝟏𝟐"


def with_check(first17: str) -> str:
    return first17 + id_check_digit(first17)


regions = st.sampled_from(CODES)
births = st.dates(min_value=date(TODAY.year - MAX_AGE_YEARS, 1, 1), max_value=TODAY)
sequences = st.integers(0, 999).map(lambda n: f"{n:03d}")


@st.composite
def valid_ids(draw: st.DrawFn) -> str:
    return with_check(f"{draw(regions)}{draw(births):%Y%m%d}{draw(sequences)}")


def test_known_id_numbers_are_valid() -> None:
    assert id_number_problem("11010519491231002X", TODAY) is None
    # Hancheng's code since 1995, held by someone born in 1968 (codes are kept for life)
    assert id_number_problem("61058119680312002X", TODAY) is None
    # Chaoyang county, 1983-1992: withdrawn since, still on the cards issued then
    assert id_number_problem(with_check("44052419800101001"), TODAY) is None


def test_wrong_check_digit_is_named() -> None:
    assert "check digit" in (id_number_problem("110105194912310021", TODAY) or "")


def test_wrong_shape_is_named() -> None:
    assert "18" in (id_number_problem("1101051949", TODAY) or "")
    # lower-case x is normalised at the edge, not here
    assert id_number_problem("11010519491231002x", TODAY) is not None
    assert id_number_problem("11010519491231002X\n", TODAY) is not None


@given(valid_ids())
def test_every_valid_number_passes_and_masks(id_number: str) -> None:
    assert id_number_problem(id_number, TODAY) is None
    assert mask_id_number(id_number) == id_number[:6] + "********" + id_number[-4:]
    assert id_number not in mask_text(f"证件号 {id_number} 已核验")


@given(valid_ids())
def test_exactly_one_check_character_fits(id_number: str) -> None:
    valid = [c for c in "0123456789X" if id_number_problem(id_number[:17] + c, TODAY) is None]
    assert valid == [id_number[17]]


@given(valid_ids(), st.integers(13, 99) | st.just(0))
def test_a_month_that_does_not_exist_is_refused(id_number: str, month: int) -> None:
    bad = with_check(f"{id_number[:10]}{month:02d}{id_number[12:17]}")
    assert "not a date of birth" in (id_number_problem(bad, TODAY) or "")


@given(valid_ids(), st.sampled_from(["0230", "0229", "0431", "0631", "0931", "1131", "0100"]))
def test_a_day_that_does_not_exist_is_refused(id_number: str, month_day: str) -> None:
    year = int(id_number[6:10])
    assume(month_day != "0229" or not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)))
    bad = with_check(f"{id_number[:10]}{month_day}{id_number[14:17]}")
    assert "not a date of birth" in (id_number_problem(bad, TODAY) or "")


@given(regions, st.dates(min_value=TODAY + timedelta(days=1), max_value=date(9999, 12, 31)))
def test_a_birth_date_in_the_future_is_refused(region: str, born: date) -> None:
    bad = with_check(f"{region}{born:%Y%m%d}001")
    assert "future" in (id_number_problem(bad, TODAY) or "")


@given(regions, st.dates(min_value=date(1000, 1, 1), max_value=date(1900, 12, 31)))
def test_a_birth_date_long_ago_is_refused(region: str, born: date) -> None:
    bad = with_check(f"{region}{born:%Y%m%d}001")
    assert "years ago" in (id_number_problem(bad, TODAY) or "")


@given(st.text(DIGITS, min_size=6, max_size=6), births, sequences)
def test_a_region_that_never_existed_is_refused(region: str, born: date, seq: str) -> None:
    assume(not division_code_exists(region))
    bad = with_check(f"{region}{born:%Y%m%d}{seq}")
    assert "administrative division" in (id_number_problem(bad, TODAY) or "")


def test_region_000000_and_unlisted_districts_are_refused() -> None:
    assert not division_code_exists("000000")
    assert not division_code_exists("999901")  # a district of a prefecture that never was
    assert division_code_exists("440401")  # listed municipal districts are kept
    assert division_code_exists("810000")  # Hong Kong residents' residence permits
    assert len(CODES) > 7000  # current and historical codes, not only today's


@given(valid_ids(), st.integers(0, 16), st.sampled_from(FOREIGN_DIGITS))
def test_digits_that_are_not_ascii_are_refused(id_number: str, position: int, digit: str) -> None:
    assert digit.isdecimal()  # what \d would have let through
    bad = id_number[:position] + digit + id_number[position + 1 :]
    assert "18 characters" in (id_number_problem(bad, TODAY) or "")


@given(st.sampled_from(["13", "15", "18", "19"]), st.text(DIGITS, min_size=9, max_size=9))
def test_mobile_numbers_pass_and_mask(prefix: str, rest: str) -> None:
    phone = prefix + rest
    assert phone_problem(phone) is None
    assert mask_phone(phone) == phone[:3] + "****" + phone[-4:]


@given(st.text(DIGITS, min_size=8, max_size=8), st.integers(0, 10), st.sampled_from(FOREIGN_DIGITS))
def test_mobile_numbers_in_other_digits_are_refused(rest: str, position: int, digit: str) -> None:
    phone = "138" + rest
    assert phone_problem(phone) is None
    assert phone_problem(phone[:position] + digit + phone[position + 1 :]) is not None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("王\x1b[31m秀英", "control character U+001B"),
        ("王秀英\r", "control character U+000D"),
        ("王\x85秀英", "control character U+0085"),
        ("\u202e英秀王", "direction control U+202E"),
        ("王\u2066秀英\u2069", "direction control U+2066"),
        ("王\u200f秀英", "direction control U+200F"),
        ("\u200d\u200d", "visible letters"),
        ("\u200b\ufeff\u2060", "visible letters"),
        ("\u3000\u00a0", "visible letters"),
        ("\u3164", "visible letters"),
    ],
)
def test_unreadable_names_are_refused(name: str, says: str) -> None:
    assert says in (person_name_problem(name) or "")


@pytest.mark.parametrize(
    "name", ["王秀英", "欧阳娜娜", "Ahmad Karimi", "阿依古丽·买买提", "O'Brien-Smith", "李\u200d明"]
)
def test_names_as_people_write_them_pass(name: str) -> None:
    assert person_name_problem(name) is None


def test_free_text_keeps_lines_and_tabs_but_no_other_control() -> None:
    assert text_problem("材料齐全\n\t符合条件") is None
    assert "U+001B" in (text_problem("\x1b[2Jcleared") or "")
    assert "U+000D" in (text_problem("line\r\n") or "")
    assert "U+007F" in (text_problem("del\x7f") or "")


def test_masks_keep_only_what_identifies_nobody() -> None:
    assert mask_id_number("11010519491231002X") == "110105********002X"
    assert mask_phone("13812345678") == "138****5678"
