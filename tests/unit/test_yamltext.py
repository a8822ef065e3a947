"""The reference files parse to the same data with libyaml as with the pure-Python loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.domain.yamltext import YAMLError, parse_yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    "path", sorted(DATA.rglob("*.yaml")), ids=lambda p: p.relative_to(DATA).as_posix()
)
def test_every_reference_file_parses_as_the_pure_python_safe_loader_reads_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert parse_yaml(text) == yaml.load(text, Loader=yaml.SafeLoader)


def test_tags_that_would_build_python_objects_are_refused() -> None:
    with pytest.raises(YAMLError):
        parse_yaml("!!python/object/apply:os.system ['true']")
