"""One pass of a kind whose plans remove data through the gate: RetentionPolicy, OODSCache.

Both show the plan of a new generation on its first pass and carry a plan out only from a
later one (`steward.services.deletion.shown_first`): protections applied beside the change
(another policy's hold, a Site's freeze, a pin) reach this process's indexes through watches
of their own, in no order with it. The later pass must not come a moment after the first:
a kind's timer leaves its turn while a change pass of the object ended less than half an
interval ago (`settling`), as the refresh loop does for an object a change handler passed.
kopf's first timer run comes at least half an interval after the object appears (`jitter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import kopf
from pydantic import BaseModel

from steward.factory import Factory
from steward.handlers.common import INTERVAL, factory, parse, post, reconciling, resource_ref
from steward.handlers.protections import cluster_facts
from steward.services.audit import ResourceRef
from steward.services.protections import ClusterFacts
from steward.services.site import Outcome

__all__ = ["Reconciler", "gated_pass", "note_change", "settling"]

M = TypeVar("M", bound=BaseModel)
R_contra = TypeVar("R_contra", contravariant=True)


class Reconciler(Protocol[R_contra]):
    """A kind's service: one pass over one resource, from the facts and its old status."""

    def reconcile(
        self,
        resource: R_contra,
        ref: ResourceRef,
        facts: ClusterFacts,
        old_status: Mapping[str, Any] | None,
        /,
    ) -> Outcome:
        """The resource's new status and Events (`RetentionService`, `OODSService`)."""


def note_change(memo: Any, clock: Callable[[], float] = time.monotonic) -> None:  # noqa: ANN401 - kopf's per-object memo
    """Note that a change handler's pass of the object ends now (see `settling`)."""
    memo["changed_at"] = clock()


def settling(memo: Any, clock: Callable[[], float] = time.monotonic) -> bool:  # noqa: ANN401 - kopf's per-object memo
    """Whether a change handler's pass of the object ended less than half an interval ago."""
    at: float | None = memo.get("changed_at")
    return at is not None and clock() - at < INTERVAL / 2


def gated_pass(  # noqa: PLR0917 - kopf's arguments and the kind's three parts
    kind: str,
    model: type[M],
    service: Callable[[Factory], Reconciler[M]],
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,  # noqa: ANN401 - kopf's per-object memo
    kwargs: Mapping[str, Any],
    *,
    timer: bool,
) -> None:
    """One pass of the resource; a timer's is skipped while the object is `settling`.

    The check and the note are made under the object's lock (`reconciling`): a timer that
    waited for a change pass to end sees that pass's note.
    """
    with reconciling(kind, body, patch, memo) as copy:
        if timer and settling(memo):
            return
        try:
            resource = parse(model, copy, patch, memo)
            if resource is None:
                return
            outcome = service(factory(memo)).reconcile(
                resource, resource_ref(copy), cluster_facts(kwargs, memo), copy.get("status")
            )
            post(copy, outcome, patch, memo)
        finally:
            if not timer:
                note_change(memo)
