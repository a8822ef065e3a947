"""The service catalogue: versioned items, their materials, and the immutability lock.

``load_catalogue()`` reads and validates the packaged data (or a ``data_dir``); cases use
``Catalogue.get(code, version)``, which refuses drafts.
"""

from shared.domain.catalogue.loader import (
    Catalogue,
    CatalogueError,
    DraftItem,
    UnknownItem,
    UnknownMaterial,
    load_catalogue,
    lock_catalogue,
    read_catalogue,
)
from shared.domain.catalogue.models import (
    NOTIFY_STATUSES,
    Category,
    Completion,
    Material,
    NotifyStatus,
    ServiceItem,
    TrustLevel,
)

__all__ = [
    "NOTIFY_STATUSES",
    "Catalogue",
    "CatalogueError",
    "Category",
    "Completion",
    "DraftItem",
    "Material",
    "NotifyStatus",
    "ServiceItem",
    "TrustLevel",
    "UnknownItem",
    "UnknownMaterial",
    "load_catalogue",
    "lock_catalogue",
    "read_catalogue",
]
