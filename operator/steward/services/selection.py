"""What a `DataSelector` selects now: the one listing every kind selects its data with.

RetentionPolicies, ReplicationRules (full and incremental passes), OODSCache pins, Campaign
inputs and the deletion gate's view of campaign inputs all list through here, so a selector
field (``match``, ``name``, ``exclude``, ``didType``) means the same thing everywhere, and
``steward plan`` previews what the operator will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Final

from steward.models.common import DataSelector, DIDType
from steward.storage.rucio import RucioStorage
from steward.storage.rucio.dids import DIDKind

__all__ = ["DID_KINDS", "select", "select_new"]

DID_KINDS: Final[dict[DIDType, DIDKind]] = {
    DIDType.DATASET: "dataset",
    DIDType.CONTAINER: "container",
    DIDType.FILE: "file",
}
"""A selector's ``didType`` as Rucio's listing names it."""


def select(
    rucio: RucioStorage, selector: DataSelector, *, did_type: DIDKind | None = None
) -> list[str]:
    """The DIDs ``selector`` selects now, sorted and without duplicates.

    An explicit list is taken as it stands (no Rucio call); a filter is one listing of its
    scope with the metadata ``match`` and the ``name`` pattern both passed to Rucio, minus the
    exclusions. ``did_type`` overrides the selector's own (the deletion gate asks for ``all``).
    """
    if selector.dids is not None:
        return sorted(dict.fromkeys(selector.dids))
    assert selector.scope is not None  # noqa: S101 - the model requires it with a filter
    return rucio.list_dids(
        selector.scope,
        selector.match,
        name=selector.name,
        exclude=selector.exclude,
        did_type=did_type or DID_KINDS[selector.did_type],
    )


def select_new(
    rucio: RucioStorage,
    selector: DataSelector,
    *,
    since: datetime,
    arrived: Mapping[str, AbstractSet[str]] | None = None,
) -> list[str]:
    """The DIDs a filter selects that were created (or had metadata set) since ``since``.

    The incremental form of `select` (see `RucioStorage.list_new_dids`), for a filter only.
    ``arrived``: the scope's arrivals from a shared listing (`steward.services.arrivals`),
    checked by name instead of listing the scope when they are few.
    """
    assert selector.scope is not None  # noqa: S101 - the model requires it with a filter
    return rucio.list_new_dids(
        selector.scope,
        selector.match,
        since=since,
        name=selector.name,
        exclude=selector.exclude,
        did_type=DID_KINDS[selector.did_type],
        arrived=arrived,
    )
