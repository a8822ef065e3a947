"""YAML text as data: the reference files (catalogue, organisations, calendar, workflows,
delegations, notice rules) are parsed here, with libyaml's safe loader where PyYAML was
built with it (about eight times faster than the pure-Python one: every service start and
every in-process app in the tests parses ~40 files) and the pure-Python safe loader
otherwise. Both build only plain data (no Python objects from tags)."""

from __future__ import annotations

from typing import Any

import yaml

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAMLError = yaml.YAMLError


def parse_yaml(text: str) -> Any:
    """The data ``text`` holds; raises :class:`YAMLError` when it isn't YAML."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader (C or Python)
