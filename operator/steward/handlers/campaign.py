"""Campaign handlers: one pass on change and on a short timer; stop and record on delete.

Only campaigns whose ``spec.site`` is this operator's own site (``STEWARD_SITE``) are acted
on: each site's cluster runs its own work (design.md, "Where it runs"). A multi-site campaign
that lists this site in ``spec.sites`` gets, here, only the LocalQueue its Jobs' copies are
dispatched into by MultiKueue (`steward.services.queueing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from steward.config import Settings
from steward.constants import GROUP, VERSION
from steward.handlers.common import factory, forget, parse, post, reconciling, resource_ref
from steward.handlers.protections import cluster_facts
from steward.models.campaign import Campaign

PLURAL = "campaigns"
_SETTINGS = Settings()
SITE = _SETTINGS.site
CAMPAIGN_INTERVAL = _SETTINGS.campaign_interval


def _ours(spec: kopf.Spec, **_: Any) -> bool:  # noqa: ANN401
    return SITE is not None and spec.get("site") == SITE


def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: Any, kwargs: Mapping[str, Any]) -> None:  # noqa: ANN401
    with reconciling("Campaign", body, patch, memo) as copy:
        campaign = parse(Campaign, copy, patch, memo)
        if campaign is None:
            return
        service = factory(memo).create_campaign_service(cluster_facts(kwargs, memo))
        outcome = service.reconcile(campaign, resource_ref(copy), copy.get("status") or {})
        post(copy, outcome, patch, memo)


@kopf.on.resume(GROUP, VERSION, PLURAL, when=_ours)
@kopf.on.create(GROUP, VERSION, PLURAL, when=_ours)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=_ours)
def campaign_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Start, pause, terminate or close out as ``desiredState`` says."""
    _reconcile(body, patch, memo, kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=CAMPAIGN_INTERVAL, when=_ours)
def campaign_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Level-based: record ended pods, start steps, rerun failures, refresh status."""
    _reconcile(body, patch, memo, kwargs)


def _dispatched_here(spec: kopf.Spec, **_: Any) -> bool:  # noqa: ANN401
    return SITE is not None and spec.get("site") != SITE and SITE in (spec.get("sites") or [])


@kopf.on.resume(GROUP, VERSION, PLURAL, when=_dispatched_here)
@kopf.on.create(GROUP, VERSION, PLURAL, when=_dispatched_here)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=_dispatched_here)
def campaign_dispatched_here(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,  # noqa: ANN401
) -> None:
    """A multi-site campaign lists this site: the LocalQueue MultiKueue's copies land in."""
    with reconciling("Campaign", body, patch, memo) as copy:
        campaign = parse(Campaign, copy, patch, memo)
        if campaign is not None and SITE is not None:
            factory(memo).create_queueing_service().ensure_dispatched_queue(
                SITE, campaign.spec.sites, resource_ref(copy).namespace or "", campaign.spec.queue
            )


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_ours)
def campaign_deleted(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **kwargs: Any) -> None:  # noqa: ANN401
    """Stop the Jobs and record every attempt before the Campaign goes (the ledger stays)."""
    with reconciling("Campaign", body, patch, memo, deleting=True) as copy:
        campaign = parse(Campaign, copy, patch, memo)
        if campaign is not None:
            service = factory(memo).create_campaign_service(cluster_facts(kwargs, memo))
            events = service.finalize(campaign, resource_ref(copy))
            for type_, reason, message in events:
                kopf.event(body, type=type_, reason=reason, message=message)
    forget(body)
