"""Loading the catalogue from the data directory, and its immutability lock.

Files (under the data directory, default: the packaged ``shared/data``):

- ``catalogue/materials.yaml``: every material an item can require.
- ``catalogue/items.yaml``: every version of every item, draft or published; materials by code.
- ``catalogue.lock.json``: ``"code@version"`` → SHA-256 of the published entry's canonical
  JSON. A published entry that differs from its lock, a locked entry that disappeared (or went
  back to draft) and a published entry not yet locked all stop loading. ``lock_catalogue``
  (``caseflow catalogue lock``) adds newly published entries and never changes a locked one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.domain.catalogue.models import Material, ServiceItem
from shared.domain.orgs import Organisations, load_organisations
from shared.domain.yamltext import YAMLError, parse_yaml

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
ITEMS_FILE = Path("catalogue") / "items.yaml"
MATERIALS_FILE = Path("catalogue") / "materials.yaml"
LOCK_FILE = Path("catalogue.lock.json")


class CatalogueError(ValueError):
    """The catalogue data is invalid; the message names every entry at fault."""


class UnknownItem(LookupError):
    """No such item code, or no such version of it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown item"


class DraftItem(LookupError):
    """The version asked for is a draft (or the item has no published version yet)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "drafts can't be used for cases"


class UnknownMaterial(LookupError):
    """No material has this code."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown material"


class Catalogue:
    """Every version of every item, and the materials they refer to."""

    def __init__(self, items: Iterable[ServiceItem], materials: Iterable[Material]) -> None:
        self._materials: dict[str, Material] = {}
        for material in materials:
            if material.code in self._materials:
                raise CatalogueError(f"material {material.code!r} is defined twice")
            self._materials[material.code] = material
        self._items: dict[str, dict[int, ServiceItem]] = {}
        problems: list[str] = []
        for item in items:
            versions = self._items.setdefault(item.code, {})
            if item.version in versions:
                problems.append(f"{item.key}: defined twice")
                continue
            for material in item.materials:
                if self._materials.get(material.code) != material:
                    problems.append(
                        f"{item.key}: material {material.code!r} is not the catalogue's"
                    )
            versions[item.version] = item
        if problems:
            raise CatalogueError("\n".join(problems))
        for code, versions in self._items.items():
            self._items[code] = dict(sorted(versions.items()))

    def get(self, code: str, version: int | None = None) -> ServiceItem:
        """A version fit for a case: ``None`` is the newest published one; drafts refuse."""
        versions = self._items.get(code)
        if versions is None:
            raise UnknownItem(f"unknown service item {code!r}")
        if version is None:
            published = [v for v in versions.values() if v.status == "published"]
            if not published:
                raise DraftItem(
                    f"service item {code!r} has no published version; drafts can't be used"
                    " for cases"
                )
            return published[-1]
        item = versions.get(version)
        if item is None:
            raise UnknownItem(f"service item {code!r} has no version {version}")
        if item.status != "published":
            raise DraftItem(f"{item.key} is a draft; drafts can't be used for cases")
        return item

    def published(self) -> list[ServiceItem]:
        """The newest published version of each item that has one (in data-file order)."""
        newest: list[ServiceItem] = []
        for versions in self._items.values():
            published = [v for v in versions.values() if v.status == "published"]
            if published:
                newest.append(published[-1])
        return newest

    def versions(self, code: str) -> list[ServiceItem]:
        """Every version of an item, drafts included, oldest first."""
        versions = self._items.get(code)
        if versions is None:
            raise UnknownItem(f"unknown service item {code!r}")
        return list(versions.values())

    def entries(self) -> Iterator[ServiceItem]:
        """Every version of every item, drafts included."""
        for versions in self._items.values():
            yield from versions.values()

    def material(self, code: str) -> Material:
        try:
            return self._materials[code]
        except KeyError:
            raise UnknownMaterial(f"unknown material {code!r}") from None

    def materials(self) -> list[Material]:
        return list(self._materials.values())

    def __contains__(self, code: object) -> bool:
        return code in self._items

    def __len__(self) -> int:
        """The number of item codes (not versions)."""
        return len(self._items)


def read_catalogue(
    data_dir: Path | None = None, organisations: Organisations | None = None
) -> Catalogue:
    """Read and validate items and materials without checking the lock (for ``lock``)."""
    root = data_dir or DEFAULT_DATA_DIR
    orgs = organisations if organisations is not None else load_organisations(root)
    materials = _read_materials(root / MATERIALS_FILE)
    by_code = {m.code: m for m in materials}
    path = root / ITEMS_FILE
    raw = _read_yaml(path)
    entries = raw.get("items") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise CatalogueError(f"{path}: expected a mapping with a list 'items'")
    items: list[ServiceItem] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        name = _entry_name(entry, index)
        try:
            item = ServiceItem.model_validate(entry, context={"materials": by_code})
        except ValidationError as err:
            problems.extend(f"{name}: {p}" for p in _problems(err))
            continue
        problems.extend(f"{name}: {p}" for p in _organisation_problems(item, orgs))
        items.append(item)
    if problems:
        raise CatalogueError(f"{path}:\n  " + "\n  ".join(problems))
    try:
        return Catalogue(items, materials)
    except CatalogueError as err:
        raise CatalogueError(f"{path}:\n  " + str(err).replace("\n", "\n  ")) from None


def load_catalogue(
    data_dir: Path | None = None, organisations: Organisations | None = None
) -> Catalogue:
    """Read, validate and check the catalogue against its lock; CatalogueError if not sound."""
    root = data_dir or DEFAULT_DATA_DIR
    catalogue = read_catalogue(root, organisations)
    lock = read_lock(root)
    problems = lock_problems(catalogue, lock)
    if problems:
        raise CatalogueError(f"{root / LOCK_FILE}:\n  " + "\n  ".join(problems))
    return catalogue


def lock_problems(catalogue: Catalogue, lock: dict[str, str]) -> list[str]:
    """What breaks immutability: changed or vanished locked entries, unlocked published ones."""
    broken, unlocked = _lock_state(catalogue, lock)
    return broken + [
        f"{item.key} is published but not locked; run `caseflow catalogue lock`"
        for item in unlocked
    ]


def _lock_state(catalogue: Catalogue, lock: dict[str, str]) -> tuple[list[str], list[ServiceItem]]:
    """(problems with locked entries, published entries not in the lock yet)."""
    published = {i.key: i for i in catalogue.entries() if i.status == "published"}
    broken: list[str] = []
    for key, digest in lock.items():
        item = published.get(key)
        if item is None:
            broken.append(
                f"{key} is locked but no longer published in the catalogue;"
                " published versions can't be removed or made drafts again"
            )
        elif item.digest() != digest:
            broken.append(
                f"{key} differs from its locked version (sha256 {item.digest()[:12]}…,"
                f" locked {digest[:12]}…); published versions are immutable:"
                " publish a new version instead"
            )
    return broken, [item for key, item in published.items() if key not in lock]


def read_lock(data_dir: Path | None = None) -> dict[str, str]:
    """The lock file's ``code@version`` → SHA-256 map (empty if there is no lock file)."""
    path = (data_dir or DEFAULT_DATA_DIR) / LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise CatalogueError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CatalogueError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in data.items()
    ):
        raise CatalogueError(f'{path}: expected {{"code@version": "<sha256 hex>", ...}}')
    return data


def lock_catalogue(
    data_dir: Path | None = None, organisations: Organisations | None = None
) -> list[str]:
    """Add every newly published entry to the lock; return their keys.

    Refuses (CatalogueError, lock file untouched) when a locked entry changed or vanished.
    """
    root = data_dir or DEFAULT_DATA_DIR
    catalogue = read_catalogue(root, organisations)
    lock = read_lock(root)
    broken, unlocked = _lock_state(catalogue, lock)
    if broken:
        raise CatalogueError(
            f"{root / LOCK_FILE}: refusing to change locked entries:\n  " + "\n  ".join(broken)
        )
    if unlocked:
        new_lock = dict(lock) | {item.key: item.digest() for item in unlocked}
        text = json.dumps(dict(sorted(new_lock.items())), indent=2, ensure_ascii=False)
        (root / LOCK_FILE).write_text(text + "\n", encoding="utf-8")
    return [item.key for item in unlocked]


def _read_materials(path: Path) -> list[Material]:
    raw = _read_yaml(path)
    entries = raw.get("materials") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise CatalogueError(f"{path}: expected a mapping with a list 'materials'")
    materials: list[Material] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        code = entry.get("code") if isinstance(entry, dict) else None
        name = f"material {code!r}" if isinstance(code, str) else f"material #{index + 1}"
        try:
            material = Material.model_validate(entry)
        except ValidationError as err:
            problems.extend(f"{name}: {p}" for p in _problems(err))
            continue
        if material.code in seen:
            problems.append(f"{name}: defined twice")
        seen.add(material.code)
        materials.append(material)
    if problems:
        raise CatalogueError(f"{path}:\n  " + "\n  ".join(problems))
    return materials


def _organisation_problems(item: ServiceItem, orgs: Organisations) -> list[str]:
    problems: list[str] = []
    for field, code in (("authority", item.authority), ("forward_to", item.forward_to)):
        if code is None:
            continue
        if code not in orgs:
            problems.append(f"{field}: unknown organisation {code!r}")
        elif not orgs.get(code).is_authority:
            problems.append(
                f"{field}: {code!r} is a {orgs.get(code).kind}, not a city department or"
                " town government"
            )
    return problems


def _entry_name(entry: Any, index: int) -> str:
    if isinstance(entry, dict) and "code" in entry:
        return f"{entry['code']}@{entry.get('version', '?')}"
    return f"item #{index + 1}"


def _problems(err: ValidationError) -> list[str]:
    return [
        (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "") + e["msg"]
        for e in err.errors()
    ]


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CatalogueError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return parse_yaml(text)
    except YAMLError as err:
        raise CatalogueError(f"{path}: invalid YAML: {err}") from None
