"""OODSCache handlers: converge the cache's rules and evict, on change and on a timer."""

from __future__ import annotations

from functools import partial
from typing import Any

import kopf

from steward.constants import GROUP, VERSION
from steward.factory import Factory
from steward.handlers.common import (
    INTERVAL,
    factory,
    forget,
    jitter,
    parse,
    reconciling,
    resource_ref,
)
from steward.handlers.gated import gated_pass
from steward.models.oods import OODSCache

PLURAL = "oodscaches"
_pass = partial(gated_pass, "OODSCache", OODSCache, Factory.create_oods_service)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def cache_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Converge a new or changed cache at once."""
    _pass(body, patch, memo, kwargs, timer=False)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=jitter)
def cache_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:  # noqa: ANN401
    """Every cycle: the window moves, data arrives, the fill crosses watermarks."""
    _pass(body, patch, memo, kwargs, timer=True)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def cache_deleted(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Stop placing new data; pinned data gets a window's lifetime instead of none."""
    with reconciling("OODSCache", body, patch, memo, deleting=True) as copy:
        cache = parse(OODSCache, copy, patch, memo)
        if cache is not None:
            events = factory(memo).create_oods_service().finalize(cache, resource_ref(copy))
            for type_, reason, message in events:
                kopf.event(body, type=type_, reason=reason, message=message)
    forget(body)
