"""Site handlers: register RSEs on change and on a timer (downtimes), guard deletion."""

from __future__ import annotations

from typing import Any

import kopf

from steward.constants import GROUP, VERSION
from steward.handlers.common import (
    EDGE_INTERVAL,
    INTERVAL,
    edge_due,
    factory,
    forget,
    jitter,
    parse,
    post,
    reconciling,
    resource_ref,
)
from steward.models.site import Site

PLURAL = "sites"


@kopf.index(GROUP, VERSION, PLURAL)
def sites_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:  # noqa: ANN401
    """Every Site by name, for distances between sites."""
    return {name: dict(body)}


def _peers(index: kopf.Index[str, dict[str, Any]], name: str) -> list[Site]:
    peers = []
    for other, bodies in index.items():
        if other == name:
            continue
        for body in bodies:
            try:
                peers.append(Site.model_validate({k: v for k, v in body.items() if k != "status"}))
            except ValueError:
                continue
    return peers


def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: Any, sites_by_name: Any) -> None:  # noqa: ANN401
    with reconciling("Site", body, patch, memo) as copy:
        site = parse(Site, copy, patch, memo)
        if site is None:
            return
        made = factory(memo)
        outcome = made.create_site_service().reconcile(
            site,
            resource_ref(copy),
            _peers(sites_by_name, site.metadata.name),
            (copy.get("status") or {}).get("conditions"),
        )
        local = made.context.settings.site
        made.create_queueing_service().reconcile_local_site(site, local, outcome)
        post(copy, outcome, patch, memo)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def site_changed(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **kwargs: Any,  # noqa: ANN401
) -> None:
    """Converge Rucio on a new or changed Site."""
    _reconcile(body, patch, memo, kwargs["sites_by_name"])


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=jitter)
def site_timer(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **kwargs: Any,  # noqa: ANN401
) -> None:
    """Level-based: start and end downtimes, undo changes made behind our back."""
    _reconcile(body, patch, memo, kwargs["sites_by_name"])


@kopf.on.delete(GROUP, VERSION, PLURAL)
def site_deleted(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:  # noqa: ANN401
    """Keep the Site (finalizer) while any of its RSEs holds data; then let it go."""
    with reconciling("Site", body, patch, memo, deleting=True) as copy:
        site = parse(Site, copy, patch, memo)
        if site is not None:
            made = factory(memo)
            busy = made.create_site_service().holding_data(site, resource_ref(copy))
            if busy:
                message = "deletion waits: " + "; ".join(busy)
                patch.status["deletion"] = message
                raise kopf.TemporaryError(message, delay=INTERVAL)
            if made.context.settings.site == site.metadata.name and site.spec.batch is not None:
                made.create_queueing_service().remove_site(site.metadata.name)
    forget(body)


def _has_downtimes(spec: kopf.Spec, **_: Any) -> bool:  # noqa: ANN401
    return bool(spec.get("downtimes"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=EDGE_INTERVAL, when=_has_downtimes)
def site_edge(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **kwargs: Any,  # noqa: ANN401
) -> None:
    """Flip availability within seconds of a downtime's start or end."""
    if edge_due(memo):
        _reconcile(body, patch, memo, kwargs["sites_by_name"])
