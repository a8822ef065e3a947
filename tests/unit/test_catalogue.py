"""The catalogue: the station's 27 items, validation, immutability of published versions."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from shared.cli.catalogue import app as catalogue_cli
from shared.domain.catalogue import (
    NOTIFY_STATUSES,
    CatalogueError,
    Category,
    Completion,
    DraftItem,
    ServiceItem,
    TrustLevel,
    UnknownItem,
    UnknownMaterial,
    load_catalogue,
    lock_catalogue,
)
from shared.domain.catalogue.loader import DEFAULT_DATA_DIR, ITEMS_FILE, LOCK_FILE, MATERIALS_FILE
from shared.domain.orgs import OrgKind, load_organisations

CATALOGUE = load_catalogue()
ORGS = load_organisations()

Items = list[dict[str, Any]]


def test_27_published_items_10_at_the_station_17_forwarded() -> None:
    published = CATALOGUE.published()
    assert len(published) == 27
    assert len({i.code for i in published}) == 27
    assert Counter(i.completion for i in published) == {
        Completion.station: 10,
        Completion.forwarded: 17,
    }


def test_every_item_is_version_1_published_on_its_workflow() -> None:
    for item in CATALOGUE.entries():
        assert (item.version, item.status, item.workflow_version) == (1, "published", 1)
        expected = "station_item" if item.completion is Completion.station else "forwarded_item"
        assert item.workflow == expected, item.key


@pytest.mark.parametrize(
    ("code", "authority", "completion", "name_zh"),
    [
        ("pension_enrolment", "hc_hrss", None, "城乡居民基本养老保险参保登记"),
        ("minimum_living_allowance", "hc_civil_affairs", Completion.forwarded, "最低生活保障申请"),
        (
            "medical_insurance_enrolment",
            "hc_medical_security",
            Completion.station,
            "城乡居民基本医疗保险参保登记",
        ),
        ("logging_permit", "hc_forestry", Completion.forwarded, "林木采伐许可证核发"),
        ("birth_certificate", "hc_health", None, "出生医学证明办理"),
        ("funeral_subsidy", "hc_hrss", None, "丧葬补助金申领"),
    ],
)
def test_the_story_items_are_there(
    code: str, authority: str, completion: Completion | None, name_zh: str
) -> None:
    item = CATALOGUE.get(code)
    assert item.authority == authority
    assert name_zh in item.name_zh
    if completion is not None:
        assert item.completion is completion


def test_every_category_and_only_authorities_are_competent() -> None:
    published = CATALOGUE.published()
    assert {i.category for i in published} == set(Category)
    for item in published:
        assert ORGS.get(item.authority).kind is not OrgKind.station
        if item.completion is Completion.forwarded:
            assert item.forward_to is not None
            assert ORGS.get(item.forward_to).kind is not OrgKind.station
        else:
            assert item.forward_to is None


def test_committed_limits_are_shorter_than_legal_ones() -> None:
    for item in CATALOGUE.published():
        assert 1 <= item.committed_limit_days < item.legal_limit_days, item.key


def test_every_material_code_is_known() -> None:
    raw = yaml.safe_load((DEFAULT_DATA_DIR / ITEMS_FILE).read_text(encoding="utf-8"))
    materials = {m.code for m in CATALOGUE.materials()}
    used = {code for entry in raw["items"] for code in entry["materials"]}
    assert used <= materials
    assert used == materials  # no material defined for nothing
    for item in CATALOGUE.published():
        assert item.materials
        for material in item.materials:
            assert CATALOGUE.material(material.code) == material


def test_trust_levels_of_known_materials() -> None:
    id_card = CATALOGUE.material("id_card")
    assert (id_card.name_zh, id_card.trust_level, id_card.original_required) == (
        "居民身份证",
        TrustLevel.B,
        True,
    )
    assert CATALOGUE.material("household_register").trust_level is TrustLevel.B
    assert CATALOGUE.material("application_form").trust_level is TrustLevel.D
    assert {m.trust_level for m in CATALOGUE.materials()} == set(TrustLevel)
    with pytest.raises(UnknownMaterial, match="'passport'"):
        CATALOGUE.material("passport")


def test_fees_are_almost_all_zero() -> None:
    fees = {i.code: i.fee_yuan for i in CATALOGUE.published() if i.fee_yuan != 0}
    assert fees == {"id_card_renewal": Decimal("20.00")}


def test_notify_on_uses_known_statuses() -> None:
    for item in CATALOGUE.published():
        assert set(item.notify_on) <= set(NOTIFY_STATUSES)
        assert "accepted" in item.notify_on and "approved" in item.notify_on
        assert ("forwarded" in item.notify_on) is (item.completion is Completion.forwarded)


def test_legal_bases_cite_the_laws() -> None:
    bases = {i.code: i.legal_basis for i in CATALOGUE.published()}
    assert "《中华人民共和国社会保险法》" in bases["pension_enrolment"]
    assert "《社会救助暂行办法》" in bases["minimum_living_allowance"]
    assert "《中华人民共和国森林法》" in bases["logging_permit"]
    assert "森林法实施条例" in bases["logging_permit"]
    assert "《中华人民共和国母婴保健法》" in bases["birth_certificate"]


def test_unknown_items_and_versions() -> None:
    with pytest.raises(LookupError, match="unknown service item 'pension'"):
        CATALOGUE.get("pension")
    with pytest.raises(UnknownItem, match="no version 7"):
        CATALOGUE.get("logging_permit", 7)
    with pytest.raises(UnknownItem):
        CATALOGUE.versions("pension")
    assert CATALOGUE.get("logging_permit", 1) == CATALOGUE.get("logging_permit")
    assert "logging_permit" in CATALOGUE and "pension" not in CATALOGUE


def test_digest_is_canonical() -> None:
    item = CATALOGUE.get("pension_enrolment")
    same = ServiceItem.model_validate(
        dict(reversed(list(item.model_dump().items()))) | {"fee_yuan": "0"}
    )
    assert same.digest() == item.digest()
    assert item.model_copy(update={"committed_limit_days": 2}).digest() != item.digest()


# ------------------------------------------------------- edited copies of the data directory


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, target)
    return target


def _edit(data_dir: Path, edit: Callable[[Items], None], file: Path = ITEMS_FILE) -> None:
    path = data_dir / file
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data["items"] if "items" in data else data["materials"])
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _entry(items: Items, code: str, version: int = 1) -> dict[str, Any]:
    return next(i for i in items if i["code"] == code and i["version"] == version)


def _add_version(items: Items, code: str, status: str, **changes: Any) -> None:
    entry = dict(_entry(items, code)) | {"version": 2, "status": status} | changes
    items.append(entry)


def test_unchanged_copy_loads(data_dir: Path) -> None:
    assert len(load_catalogue(data_dir).published()) == 27


def test_a_modified_published_entry_fails_naming_it(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _entry(items, "logging_permit").update(committed_limit_days=4))
    with pytest.raises(CatalogueError, match=r"logging_permit@1 differs from its locked version"):
        load_catalogue(data_dir)


def test_a_changed_material_definition_breaks_every_item_using_it(data_dir: Path) -> None:
    def weaken(materials: Items) -> None:
        next(m for m in materials if m["code"] == "logging_design")["trust_level"] = "B"

    _edit(data_dir, weaken, MATERIALS_FILE)
    with pytest.raises(CatalogueError) as raised:
        load_catalogue(data_dir)
    assert "logging_permit@1 differs" in str(raised.value)
    assert "pension_enrolment@1" not in str(raised.value)


def test_a_removed_published_entry_fails(data_dir: Path) -> None:
    _edit(data_dir, lambda items: items.remove(_entry(items, "farmland_subsidy")))
    with pytest.raises(CatalogueError, match="farmland_subsidy@1 is locked but no longer"):
        load_catalogue(data_dir)


def test_a_published_entry_back_to_draft_fails(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _entry(items, "farmland_subsidy").update(status="draft"))
    with pytest.raises(CatalogueError, match="farmland_subsidy@1 is locked but no longer"):
        load_catalogue(data_dir)


def test_a_draft_loads_but_cant_be_got_for_cases(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _add_version(items, "logging_permit", "draft", fee_yuan=5))
    catalogue = load_catalogue(data_dir)
    assert catalogue.get("logging_permit").version == 1
    with pytest.raises(DraftItem, match="drafts can't be used for cases"):
        catalogue.get("logging_permit", 2)
    assert [i.status for i in catalogue.versions("logging_permit")] == ["published", "draft"]
    assert [i.version for i in catalogue.published() if i.code == "logging_permit"] == [1]


def test_an_item_with_only_a_draft_cant_be_got(data_dir: Path) -> None:
    def add(items: Items) -> None:
        items.append(
            dict(_entry(items, "logging_permit")) | {"code": "seedling", "status": "draft"}
        )

    _edit(data_dir, add)
    catalogue = load_catalogue(data_dir)
    assert "seedling" in catalogue
    with pytest.raises(DraftItem, match="'seedling' has no published version"):
        catalogue.get("seedling")


def test_a_newly_published_version_must_be_locked_then_is_newest(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _add_version(items, "logging_permit", "published"))
    with pytest.raises(CatalogueError, match="logging_permit@2 is published but not locked"):
        load_catalogue(data_dir)
    assert lock_catalogue(data_dir) == ["logging_permit@2"]
    assert lock_catalogue(data_dir) == []
    catalogue = load_catalogue(data_dir)
    assert catalogue.get("logging_permit").version == 2
    assert catalogue.get("logging_permit", 1).version == 1


def test_lock_refuses_to_change_a_locked_entry(data_dir: Path) -> None:
    before = (data_dir / LOCK_FILE).read_text(encoding="utf-8")
    _edit(data_dir, lambda items: _entry(items, "pension_enrolment").update(name_en="Pensions"))
    with pytest.raises(CatalogueError, match=r"refusing.*\n.*pension_enrolment@1 differs"):
        lock_catalogue(data_dir)
    assert (data_dir / LOCK_FILE).read_text(encoding="utf-8") == before


def test_a_missing_lock_file_fails(data_dir: Path) -> None:
    (data_dir / LOCK_FILE).unlink()
    with pytest.raises(CatalogueError, match="pension_enrolment@1 is published but not locked"):
        load_catalogue(data_dir)


def test_the_lock_file_is_what_the_data_hashes_to() -> None:
    lock = json.loads((DEFAULT_DATA_DIR / LOCK_FILE).read_text(encoding="utf-8"))
    assert lock == {i.key: i.digest() for i in CATALOGUE.entries()}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("authority", "hc_taxation", "authority: unknown organisation 'hc_taxation'"),
        ("forward_to", "hc_nowhere", "forward_to: unknown organisation 'hc_nowhere'"),
        ("forward_to", "xuefeng_station", "'xuefeng_station' is a station"),
        ("forward_to", None, "forwarded item needs forward_to"),
        ("committed_limit_days", 25, "committed limit 25 exceeds the legal limit 20"),
        ("materials", ["id_card", "passport"], "unknown material 'passport'"),
        ("materials", ["id_card", "id_card"], "materials listed twice: id_card"),
        ("notify_on", ["accepted", "archived"], "notify_on.1"),
        ("category", "taxation", "category"),
        ("workflow", "", "workflow"),
        ("fee_yuan", -1, "fee_yuan"),
    ],
)
def test_invalid_entries_fail_naming_them(
    data_dir: Path, field: str, value: Any, problem: str
) -> None:
    _edit(data_dir, lambda items: _entry(items, "logging_permit").update({field: value}))
    with pytest.raises(CatalogueError) as raised:
        load_catalogue(data_dir)
    message = str(raised.value)
    assert "logging_permit@1" in message
    assert problem in message


def test_a_duplicate_version_fails(data_dir: Path) -> None:
    _edit(data_dir, lambda items: items.append(dict(_entry(items, "birth_certificate"))))
    with pytest.raises(CatalogueError, match="birth_certificate@1: defined twice"):
        load_catalogue(data_dir)


def test_forward_to_on_a_station_item_fails(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _entry(items, "pension_enrolment").update(forward_to="hc_hrss"))
    with pytest.raises(CatalogueError, match=r"pension_enrolment@1: .*no forward_to"):
        load_catalogue(data_dir)


def test_a_self_declared_material_with_an_original_fails(data_dir: Path) -> None:
    def edit(materials: Items) -> None:
        next(m for m in materials if m["code"] == "commitment_letter")["original_required"] = True

    _edit(data_dir, edit, MATERIALS_FILE)
    with pytest.raises(CatalogueError, match=r"'commitment_letter'.*no original"):
        load_catalogue(data_dir)


# ----------------------------------------------------------------------------- the CLI

runner = CliRunner()


def test_cli_check_passes_on_the_packaged_data() -> None:
    from shared.cli.main import app

    result = runner.invoke(app, ["catalogue", "check"])
    assert result.exit_code == 0, result.output
    assert "27 published items (10 at the station, 17 forwarded)" in result.output
    assert "provisional: 2027" in result.output


def test_cli_check_fails_naming_the_entry(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _entry(items, "logging_permit").update(fee_yuan=3))
    result = runner.invoke(catalogue_cli, ["check", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "logging_permit@1 differs from its locked version" in result.output


def test_cli_lock_adds_a_new_published_version(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _add_version(items, "funeral_subsidy", "published"))
    result = runner.invoke(catalogue_cli, ["lock", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "locked: funeral_subsidy@2" in result.output
    result = runner.invoke(catalogue_cli, ["check", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output


def test_cli_lock_refuses_a_changed_entry(data_dir: Path) -> None:
    _edit(data_dir, lambda items: _entry(items, "funeral_subsidy").update(legal_limit_days=30))
    result = runner.invoke(catalogue_cli, ["lock", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "refusing to change locked entries" in result.output
    assert "funeral_subsidy@1" in result.output


def test_cli_show() -> None:
    result = runner.invoke(catalogue_cli, ["show", "logging_permit"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "林木采伐许可证核发" in result.output
    assert "forest_right_certificate" in result.output
    result = runner.invoke(catalogue_cli, ["show"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.count("published") == 27
    result = runner.invoke(catalogue_cli, ["show", "pension"])
    assert result.exit_code == 1
    assert "unknown service item 'pension'" in result.output
