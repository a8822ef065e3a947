"""The reference files parse to the same data with libyaml as with the pure-Python loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.domain.yamltext import YAMLError, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*(ROOT / "shared" / "data").rglob("*.yaml"), *(ROOT / "services").rglob("*.yaml")])


def test_the_reference_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"shared/data/organisations.yaml", "services/notify/data/rules.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_reference_file_parses_as_the_pure_python_safe_loader_reads_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert parse_yaml(text) == yaml.load(text, Loader=yaml.SafeLoader)


def test_tags_that_would_build_python_objects_are_refused() -> None:
    with pytest.raises(YAMLError):
        parse_yaml("!!python/object/apply:os.system ['true']")


def test_the_same_text_again_is_a_copy_of_its_own() -> None:
    text = "items:\n  - code: a\n    opened: 2021-11-14\n"
    first = parse_yaml(text)
    first["items"][0]["code"] = "changed"
    first["items"].append("more")
    again = parse_yaml(text)
    assert again == yaml.load(text, Loader=yaml.SafeLoader)
    assert again is not first


def test_a_bad_text_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(YAMLError):
            parse_yaml("a: [unclosed")
