"""Indexes of what every deletion is judged against: policies, caches, campaigns (and Sites).

kopf keeps these indexes current from its watches and fills them before any handler runs.
Each kind has a watch of its own, in no order with the others: a hold created a moment
before a policy may reach its index after the policy's first pass, which is why that pass
only shows its plan (`steward.handlers.gated`). Sites come from `steward.handlers.site`'s
``sites_by_name`` index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from steward.constants import GROUP, VERSION
from steward.factory import ProcessContext
from steward.handlers.common import factory
from steward.models.campaign import Campaign
from steward.models.oods import OODSCache
from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from steward.services.protections import ClusterFacts

__all__ = ["cluster_facts", "deletion_caches", "deletion_campaigns", "deletion_policies"]

M = TypeVar("M", bound=BaseModel)


def _model(model: type[M], body: Mapping[str, Any]) -> M | None:
    try:
        return model.model_validate(dict(body))
    except ValidationError:
        return None


@kopf.index(GROUP, VERSION, "retentionpolicies")
def deletion_policies(uid: str, body: kopf.Body, **_: Any) -> dict[str, Any]:  # noqa: ANN401
    """Every RetentionPolicy, with its status (the Compliance locks it remembers)."""
    return {uid: _model(RetentionPolicy, body)}


@kopf.index(GROUP, VERSION, "oodscaches")
def deletion_caches(uid: str, body: kopf.Body, **_: Any) -> dict[str, Any]:  # noqa: ANN401
    """Every OODSCache (their pins)."""
    return {uid: _model(OODSCache, body)}


@kopf.index(GROUP, VERSION, "campaigns")
def deletion_campaigns(uid: str, body: kopf.Body, **_: Any) -> dict[str, Any]:  # noqa: ANN401
    """Every Campaign (inputs in use, failed outputs awaiting review)."""
    return {uid: _model(Campaign, body)}


def _values(index: Mapping[Any, Iterable[Any]] | None, model: type[M]) -> list[M]:
    return [item for items in (index or {}).values() for item in items if isinstance(item, model)]


def _sites(index: Mapping[Any, Iterable[Any]] | None) -> list[Site]:
    sites = []
    for bodies in (index or {}).values():
        for body in bodies:
            site = _model(Site, {k: v for k, v in body.items() if k != "status"})
            if site is not None:
                sites.append(site)
    return sites


def cluster_facts(kwargs: Mapping[str, Any], memo: Any) -> ClusterFacts:  # noqa: ANN401 - kopf's memo
    """The facts a handler's indexes (passed by kopf as keyword arguments) hold now.

    With the campaign ledger of the operator's database: what campaigns recorded reading
    (coverage by data id, earlier steps' outputs) is known to no Campaign object. The
    operator's freeze comes from the settings the process started with (``memo.context``),
    as every other setting: reading the environment again (``Settings()``) took about 5 ms,
    a tenth of a new ReplicationRule's CPU in a burst and most of a quiet timer pass's.
    """
    context: ProcessContext = memo.context
    return ClusterFacts(
        policies=_values(kwargs.get("deletion_policies"), RetentionPolicy),
        caches=_values(kwargs.get("deletion_caches"), OODSCache),
        sites=_sites(kwargs.get("sites_by_name")),
        campaigns=_values(kwargs.get("deletion_campaigns"), Campaign),
        freeze=context.settings.deletion_freeze,
        ledger=factory(memo).create_ledger_service(),
    )
