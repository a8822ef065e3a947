"""YAML text as data: the reference files (catalogue, organisations, calendar, workflows,
delegations, notice rules) are parsed here, with libyaml's safe loader where PyYAML was
built with it (about eight times faster than the pure-Python one: every service start and
every in-process app in the tests parses ~40 files) and the pure-Python safe loader
otherwise. Both build only plain data (no Python objects from tags).

The same text parsed again (the next app built in one process, as the tests build
hundreds) is not parsed again: the data of each text is kept pickled, and each caller
gets a fresh copy of it (unpickling is ~30 times faster than parsing), so that no caller
can change what another one reads."""

from __future__ import annotations

import functools
import pickle
from typing import Any

import yaml

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAMLError = yaml.YAMLError


def parse_yaml(text: str) -> Any:
    """The data ``text`` holds (a copy of its own); raises :class:`YAMLError` when it
    isn't YAML."""
    return pickle.loads(_parsed(text))  # noqa: S301 - pickled by _parsed, in this process


@functools.lru_cache(maxsize=128)
def _parsed(text: str) -> bytes:
    data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader (C or Python)
    return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
