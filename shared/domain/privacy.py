"""Masking personal data: the one implementation behind every masked view.

Citizen ID numbers, mobile numbers and e-mail addresses are shown as
``110105********002X``, ``138****5678`` and ``w***@example.com`` wherever caseflow shows
or sends data that is not the applicant's record itself: case views and histories, the
events on the bus, webhook bodies, notices, notify's deliveries, the audit timeline and
every log line. The full applicant is read only through ``GET /cases/{id}/applicant``
(with a reason, recorded as ``PersonalDataViewed``) and by the services from the log.

:func:`masked` masks a JSON value by key (``id_number``, ``phone``, ``email``, at any
depth) and free text everywhere else (:func:`mask_text`). :func:`masked_envelope` is an
event's envelope with its payload masked and marked as such (:data:`MASKED_VIEW`): the
``hash`` it carries is the stored row's, which the masked copy does not match.
"""

from __future__ import annotations

import re
from typing import Any

from shared.domain.events import StoredEvent
from shared.domain.identity import mask_id_number, mask_phone

PERSONAL_DATA_FIELD = "personal_data"
"""The envelope field that says what a copy of an event holds of personal data."""
MASKED_VIEW = "masked"
"""Its value in a masked copy: ID numbers, phone numbers and e-mail addresses are masked,
so the copy no longer matches the stored row's ``hash`` (the log is the record)."""

_KEYED = {"id_number": mask_id_number, "phone": mask_phone}


def mask_email(value: str) -> str:
    """``w***@example.com``: the first character of the mailbox and the domain kept."""
    local, at, domain = value.rpartition("@")
    if not at:
        return "***"
    # One character would be the whole mailbox; a "*" is one masked already.
    keep = local[0] if len(local) > 1 and local[0] != "*" else ""
    return f"{keep}***@{domain}"


# Numbers standing alone: not inside a longer run of letters and digits (a UUID, a hash
# or a reference number keeps its digits), except right after a label people write
# before them ("ID61058119680312002X", "tel13891234567").
_ALONE_BEFORE = r"(?<![0-9A-Za-z])"
_ALONE_AFTER = r"(?![0-9A-Za-z])"
_LABEL = r"(?:(?i:sfzh|sfz|id|no|tel|phone|mobile|mob|cell)[:#.]?){0,2}"
# Between groups of digits: up to two of the separators people type, the full-width ones
# an IME gives (U+3000 space, U+FF0D hyphen, 、), no-break and zero-width spaces included.
_SEP = r"[\s\u00a0\u200b\u3000\-\uff0d.,/、]{0,2}"
# ``\d`` is any decimal digit, full-width ones included, and the fixed digits and X have
# their full-width forms too: a number typed in full-width digits into a note is masked.
# Also written in groups: 610581 19680312 002X, 610581-1968-0312-002X.
_ID_ANYWHERE = re.compile(
    _ALONE_BEFORE
    + rf"({_LABEL}\d{{6}}){_SEP}\d{{4}}{_SEP}\d{{4}}{_SEP}(\d{{3}}[\dXxＸｘ])"
    + _ALONE_AFTER
)
# The 15-digit ID numbers issued before 1999 (6 region, 6 birth date, 3 sequence).
_OLD_ID_ANYWHERE = re.compile(_ALONE_BEFORE + rf"({_LABEL}\d{{6}})\d{{6}}(\d{{3}})" + _ALONE_AFTER)
# A mobile number, also as +86 138 1234 5678, 86-138-1234-5678, 8613812345678,
# 138.1234.5678 or (138)1234-5678.
_PHONE_ANYWHERE = re.compile(
    _ALONE_BEFORE
    + rf"({_LABEL}(?:\+?86{_SEP})?\(?[1１][3-9３-９]\d\)?){_SEP}\d{{4}}{_SEP}(\d{{4}})"
    + _ALONE_AFTER
)
# A mailbox (RFC 5322 atext and dots, letters of any script) at a domain with a dot.
_EMAIL_ANYWHERE = re.compile(r"[\w!#$%&'*+/=?^`{|}~.-]+@(?:[\w-]+\.)+[\w-]+")


def _mask_found_email(found: re.Match[str]) -> str:
    return mask_email(found.group())


def mask_text(text: str) -> str:
    """Mask every ID number, mobile number and e-mail address found in free text."""
    if "@" in text:
        # First: a mailbox may be a number (13812345678@qq.com is common).
        text = _EMAIL_ANYWHERE.sub(_mask_found_email, text)
    # search() first: most text holds no number, and sub() with a template costs ten
    # times more than a search that finds nothing (the relay masks every event).
    if _ID_ANYWHERE.search(text):
        text = _ID_ANYWHERE.sub(r"\1********\2", text)
    if _OLD_ID_ANYWHERE.search(text):
        text = _OLD_ID_ANYWHERE.sub(r"\1******\2", text)
    if _PHONE_ANYWHERE.search(text):
        text = _PHONE_ANYWHERE.sub(r"\1****\2", text)
    return text


def masked(value: Any, key: str = "") -> Any:
    """A copy of a JSON value with personal data masked: the fields ``id_number``,
    ``phone`` and ``email`` wherever they are, and free text everywhere else."""
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, key) for v in value]
    if isinstance(value, str):
        if key == "email":
            return mask_email(value)
        mask = _KEYED.get(key)
        return mask(value) if mask is not None else mask_text(value)
    return value


def masked_envelope(event: StoredEvent) -> dict[str, Any]:
    """The event's envelope with its payload masked, marked ``personal_data: masked``.

    ``hash`` and ``prev_hash`` are the stored row's: they verify against the log's copy
    (``GET /cases/{id}/events`` is masked too; the audit export holds the rows)."""
    envelope = event.envelope()
    envelope["payload"] = masked(envelope["payload"])
    envelope[PERSONAL_DATA_FIELD] = MASKED_VIEW
    return envelope


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<password>[^\s/]*)@")


def hide_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it as ``***``
    (``postgresql+asyncpg://caseflow:***@db/caseflow``): for messages about settings and
    connections, which must name the URL but never the secret in it, even a URL too
    broken to parse."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)
