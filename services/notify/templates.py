"""The notice templates: jinja2, strict, one file per (template, channel, language).

Each file defines a ``subject`` block (never personal data) and a ``body`` block. The
context holds the applicant only masked (name, ``138****5678``, ``110105********002X``,
``w***@example.com``): a template can't leak what it is never given.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from services.notify.model import Notice
from shared.domain.identity import mask_id_number, mask_phone
from shared.domain.privacy import mask_email

TEMPLATES = Path(__file__).with_name("templates")
LANGUAGES = ("zh-CN", "en")


@functools.cache
def environment(folder: Path = TEMPLATES) -> jinja2.Environment:
    """The templates' environment: strict undefined, plain text, masking filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - plain-text email and SMS, never HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["mask_id"] = mask_id_number
    env.filters["mask_phone"] = mask_phone
    env.filters["mask_email"] = mask_email
    return env


def template_name(template: str, channel: str, language: str) -> str:
    """The file of a (template, channel, language)."""
    return f"{template}.{channel}.{language}.j2"


def available(folder: Path = TEMPLATES) -> set[tuple[str, str, str]]:
    """Every (template, channel, language) that has a file."""
    found = set()
    for path in folder.glob("*.j2"):
        template, channel, language, _ = path.name.rsplit(".", 3)
        found.add((template, channel, language))
    return found


def render(template: str, channel: str, language: str, context: Mapping[str, Any]) -> Notice:
    """Render one notice; ``jinja2.UndefinedError`` names a missing variable."""
    tmpl = environment().get_template(template_name(template, channel, language))
    ctx = tmpl.new_context(dict(context))
    subject = "".join(tmpl.blocks["subject"](ctx)).strip()
    body = "".join(tmpl.blocks["body"](ctx)).strip()
    return Notice(subject=" ".join(subject.split()), body=body, language=language)


def applicant_view(applicant: Mapping[str, Any]) -> dict[str, str]:
    """What templates may know of the applicant: the name; numbers and address masked."""
    email = applicant.get("email")
    return {
        "name": str(applicant.get("name", "")),
        "phone": mask_phone(str(applicant.get("phone", ""))),
        "id_number": mask_id_number(str(applicant.get("id_number", ""))),
        "email": mask_email(str(email)) if email else "",
    }
