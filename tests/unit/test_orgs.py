"""Organisations: the fixed codes others rely on, stations kept apart, data validation."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.domain.orgs import (
    DEFAULT_DATA_DIR,
    ORGANISATIONS_FILE,
    OrganisationError,
    OrgKind,
    UnknownOrganisation,
    load_organisations,
)

CITY_DEPARTMENTS = {
    "hc_hrss": "韩城市人力资源和社会保障局",
    "hc_medical_security": "韩城市医疗保障局",
    "hc_health": "韩城市卫生健康局",
    "hc_civil_affairs": "韩城市民政局",
    "hc_forestry": "韩城市林业局",
    "hc_agriculture": "韩城市农业农村局",
    "hc_public_security": "韩城市公安局",
    "hc_justice": "韩城市司法局",
    "hc_audit": "韩城市审计局",
}


def test_city_departments_have_their_fixed_codes() -> None:
    orgs = load_organisations()
    departments = {o.code: o.name_zh for o in orgs if o.kind is OrgKind.city_department}
    assert departments == CITY_DEPARTMENTS


def test_banqiao_town_is_the_stations_parent() -> None:
    orgs = load_organisations()
    town = orgs.get("banqiao_town")
    assert town.kind is OrgKind.town_government
    assert town.name_zh == "板桥镇人民政府"
    assert town.parent is None
    assert {s.parent for s in orgs.stations()} == {"banqiao_town"}


def test_xuefeng_station_serves_its_four_villages() -> None:
    station = load_organisations().get("xuefeng_station")
    assert station.kind is OrgKind.station
    assert station.name_zh == "薛峰中心村政务服务站"
    assert station.case_prefix == "XF"
    assert [(v.code, v.name_zh) for v in station.villages] == [
        ("gongyu", "共裕村"),
        ("xuefeng", "薛峰村"),
        ("xiangshan", "香山村"),
        ("wangcun", "王村"),
    ]


def test_two_stations_are_kept_apart() -> None:
    orgs = load_organisations()
    assert [s.code for s in orgs.stations()] == ["xuefeng_station", "longmen_station"]
    xuefeng, longmen = orgs.get("xuefeng_station"), orgs.get("longmen_station")
    assert longmen.case_prefix == "LM"
    assert not {v.code for v in xuefeng.villages} & {v.code for v in longmen.villages}
    assert len(longmen.villages) == 2


def test_only_stations_have_case_prefixes_and_villages() -> None:
    for org in load_organisations():
        if org.kind is OrgKind.station:
            assert org.case_prefix and org.villages and not org.is_authority
        else:
            assert org.case_prefix is None and org.villages == () and org.is_authority


def test_the_audit_bureau_is_the_one_audit_body() -> None:
    orgs = load_organisations()
    body = orgs.audit_body()
    assert body is not None and body.code == "hc_audit"
    assert [o.code for o in orgs if o.audit_body] == ["hc_audit"]
    assert body.kind is OrgKind.city_department


def test_special_permissions_name_the_roles_that_may_hold_them() -> None:
    grants = load_organisations().special_permissions
    assert set(grants) == {"reopen", "operate", "backfill"}
    assert "auditor" not in grants["backfill"].roles
    assert grants["reopen"].roles == ("station_head",)
    assert "station_head" in grants["operate"].roles


def test_the_roles_in_the_data_are_the_roles_of_tokens() -> None:
    from typing import get_args

    from shared.adapters.auth import Role
    from shared.domain.orgs import StaffRole

    assert set(get_args(StaffRole)) == {r.value for r in Role}


def test_unknown_code_raises_a_key_error_naming_it() -> None:
    orgs = load_organisations()
    assert "hc_hrss" in orgs
    assert "hc_taxation" not in orgs
    with pytest.raises(KeyError) as raised:
        orgs.get("hc_taxation")
    assert isinstance(raised.value, UnknownOrganisation)
    assert str(raised.value) == "unknown organisation 'hc_taxation'"


def test_organisations_are_frozen() -> None:
    org = load_organisations().get("hc_hrss")
    with pytest.raises(ValueError, match="frozen"):
        org.code = "other"  # type: ignore[misc]


# ------------------------------------------------------------- validation of edited data


def _edited(tmp_path: Path, edit: Any) -> Path:
    shutil.copy(DEFAULT_DATA_DIR / ORGANISATIONS_FILE, tmp_path / ORGANISATIONS_FILE)
    path = tmp_path / ORGANISATIONS_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit({o["code"]: o for o in data["organisations"]}, data["organisations"])
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return tmp_path


def _edited_file(tmp_path: Path, edit: Any) -> Path:
    """Like :func:`_edited`, for the file as a whole (``special_permissions`` too)."""
    text = (DEFAULT_DATA_DIR / ORGANISATIONS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    edit(data)
    (tmp_path / ORGANISATIONS_FILE).write_text(
        yaml.safe_dump(data, allow_unicode=True), encoding="utf-8"
    )
    return tmp_path


def test_unchanged_copy_loads(tmp_path: Path) -> None:
    assert len(load_organisations(_edited(tmp_path, lambda by_code, entries: None))) == 12


def test_two_audit_bodies_are_refused(tmp_path: Path) -> None:
    def edit(by_code: dict[str, Any], _: list[Any]) -> None:
        by_code["hc_justice"]["audit_body"] = True

    with pytest.raises(OrganisationError, match="only one organisation can be the audit body"):
        load_organisations(_edited(tmp_path, edit))


def test_a_station_as_audit_body_is_refused(tmp_path: Path) -> None:
    def edit(by_code: dict[str, Any], _: list[Any]) -> None:
        by_code["hc_audit"]["audit_body"] = False
        by_code["xuefeng_station"]["audit_body"] = True

    with pytest.raises(OrganisationError, match="only a city department can be the audit body"):
        load_organisations(_edited(tmp_path, edit))


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        ({"roles": ["mayor"], "description": "x"}, "roles.0"),
        ({"roles": [], "description": "x"}, "roles"),
        ({"roles": ["station_head"]}, "description"),
        ({"roles": ["station_head"], "description": "x", "orgs": ["a"]}, "orgs"),
    ],
)
def test_a_bad_special_permission_is_refused(
    tmp_path: Path, grant: dict[str, Any], problem: str
) -> None:
    data_dir = _edited_file(tmp_path, lambda data: data["special_permissions"].update(x=grant))
    with pytest.raises(OrganisationError, match=rf"special permission 'x': {problem}"):
        load_organisations(data_dir)


def test_station_without_case_prefix_is_refused(tmp_path: Path) -> None:
    data_dir = _edited(tmp_path, lambda by_code, _: by_code["longmen_station"].pop("case_prefix"))
    with pytest.raises(OrganisationError, match=r"'longmen_station'.*case_prefix"):
        load_organisations(data_dir)


def test_shared_case_prefix_is_refused(tmp_path: Path) -> None:
    def edit(by_code: dict[str, Any], _: list[Any]) -> None:
        by_code["longmen_station"]["case_prefix"] = "XF"

    with pytest.raises(OrganisationError, match="case_prefix 'XF' is already used"):
        load_organisations(_edited(tmp_path, edit))


def test_unknown_parent_is_refused(tmp_path: Path) -> None:
    def edit(by_code: dict[str, Any], _: list[Any]) -> None:
        by_code["xuefeng_station"]["parent"] = "longmen_town"

    with pytest.raises(OrganisationError, match="unknown parent 'longmen_town'"):
        load_organisations(_edited(tmp_path, edit))


def test_duplicate_code_is_refused(tmp_path: Path) -> None:
    def edit(by_code: dict[str, Any], entries: list[Any]) -> None:
        entries.append(dict(by_code["hc_hrss"]))

    with pytest.raises(OrganisationError, match="'hc_hrss' is defined twice"):
        load_organisations(_edited(tmp_path, edit))


def test_village_served_by_two_stations_is_refused(tmp_path: Path) -> None:
    def edit(by_code: dict[str, Any], _: list[Any]) -> None:
        by_code["longmen_station"]["villages"].append(
            {"code": "wangcun", "name_zh": "王村", "name_en": "Wangcun Village"}
        )

    with pytest.raises(OrganisationError, match="village 'wangcun' is already served"):
        load_organisations(_edited(tmp_path, edit))
