"""Citizens' identifiers: the GB 11643 check digit, and masked forms of ID and phone
numbers (``shared.privacy`` masks whole values and free text with them)."""

from __future__ import annotations

import re

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
ID_NUMBER = re.compile(r"^\d{17}[\dX]$")
PHONE = re.compile(r"^1[3-9]\d{9}$")


def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character for the first 17 digits."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def id_number_problem(value: str) -> str | None:
    """Why ``value`` is not a valid citizen ID number, or None if it is."""
    if not ID_NUMBER.match(value):
        return "must be 18 characters: 17 digits and a digit or X (应为18位)"
    if id_check_digit(value[:17]) != value[17]:
        return "the check digit does not match (身份证号码校验位不正确)"
    return None


def mask_id_number(value: str) -> str:
    """``110101********1234``: region kept, birth date and sequence hidden."""
    return value[:6] + "*" * 8 + value[-4:] if len(value) == 18 else "*" * len(value)


def mask_phone(value: str) -> str:
    """``138****5678``."""
    return value[:3] + "****" + value[-4:] if len(value) == 11 else "*" * len(value)
