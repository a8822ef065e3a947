"""Citizen ID numbers (GB 11643) and their masked forms (free text: test_privacy.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.identity import id_check_digit, id_number_problem, mask_id_number, mask_phone


def test_known_id_numbers_have_their_check_digit() -> None:
    assert id_number_problem("11010519491231002X") is None
    assert id_number_problem("440524188001010014") is None


def test_wrong_check_digit_is_named() -> None:
    assert "check digit" in (id_number_problem("110105194912310021") or "")


def test_wrong_shape_is_named() -> None:
    assert "18" in (id_number_problem("1101051949") or "")
    assert (
        id_number_problem("11010519491231002x") is not None
    )  # lower-case x is normalised at the edge


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_every_17_digits_get_exactly_one_valid_check_character(first17: str) -> None:
    valid = [c for c in "0123456789X" if id_number_problem(first17 + c) is None]
    assert valid == [id_check_digit(first17)]


def test_masks_keep_only_what_identifies_nobody() -> None:
    assert mask_id_number("11010519491231002X") == "110105********002X"
    assert mask_phone("13812345678") == "138****5678"
