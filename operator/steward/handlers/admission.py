"""The admission webhooks: ``steward validate``'s checks at ``kubectl apply`` time, and finalizers.

One kopf validating handler per kind; the handler id is the last part of the webhook's URL
path (``/validate-<plural>``), which the ValidatingWebhookConfiguration rendered by
``steward render`` names. The decisions are `steward.services.admission`'s.

One kopf mutating handler (``/finalize-<plural>``, the MutatingWebhookConfiguration) per
kind of `FINALIZED_AT_ADMISSION`: it puts kopf's finalizer on the new object, so kopf finds
it there at the object's first event and calls the create handler at once, instead of
patching the finalizer in and waiting for the next event (kopf's ``process_resource_causes``
adds the finalizer only when ``is_deletion_blocked`` is false). The configuration ignores
failures: while the webhook is down, objects are admitted without it and kopf adds it as
it always did.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf

from steward.constants import FINALIZED_AT_ADMISSION, FINALIZER, GROUP, VERSION
from steward.handlers.common import factory
from steward.models import KINDS
from steward.observability import ADMISSION_REVIEWS

__all__ = ["FINALIZE_IDS", "REVIEW_THREADS", "WEBHOOK_IDS", "add_finalizer", "review"]

WEBHOOK_IDS: Final = {info.kind: f"validate-{info.plural}" for info in KINDS}
"""Handler id (and URL path) of each kind's webhook."""

FINALIZE_IDS: Final = {plural: f"finalize-{plural}" for plural in FINALIZED_AT_ADMISSION}
"""Handler id (and URL path) of the mutating webhook, by plural."""


REVIEW_THREADS: Final = 2
"""Reviews under way at once: each reads the Sites (one GET) and checks one resource."""
_REVIEWS = ThreadPoolExecutor(REVIEW_THREADS, thread_name_prefix="admission")


async def review(
    body: kopf.Body,
    memo: kopf.Memo,
    warnings: list[str],
    **_: Any,  # noqa: ANN401
) -> None:
    """Refuse a resource that ``steward validate`` would refuse, with validate's message.

    Async, its blocking part in threads of its own: as a synchronous handler it waited for
    one of kopf's worker threads, which a burst keeps busy with reconciles (each holding one
    through its Rucio calls), and the API server gives up on the webhook after its timeout
    (10 s): with ``failurePolicy: Fail`` the create is refused. The finalizer webhook below
    showed the wait: 1,000 creates took 180 s instead of 26 s while it was synchronous.
    """
    service = factory(memo).create_admission_service()
    result = await asyncio.get_running_loop().run_in_executor(_REVIEWS, service.review, dict(body))
    warnings.extend(result.warnings)
    decision = "allowed" if result.allowed else "refused"
    ADMISSION_REVIEWS.labels(body.get("kind", ""), decision).inc()
    if not result.allowed:
        raise kopf.AdmissionError("; ".join(result.refusals), code=422)


for _info in KINDS:
    kopf.on.validate(
        GROUP,
        VERSION,
        _info.plural,
        id=WEBHOOK_IDS[_info.kind],
        operations=["CREATE", "UPDATE"],
    )(review)


async def add_finalizer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:  # noqa: ANN401
    """Put kopf's finalizer on a new object (the finalizers it already has are kept).

    Async, so kopf runs it in its event loop: a synchronous handler would wait for one of
    the worker threads, which a burst keeps busy with reconciles, and every create would
    wait with it (1,000 creates took 180 s instead of 26 s that way).
    """
    finalizers = list(body.get("metadata", {}).get("finalizers") or [])
    if FINALIZER not in finalizers:
        patch.metadata["finalizers"] = [*finalizers, FINALIZER]
        ADMISSION_REVIEWS.labels(body.get("kind", ""), "finalized").inc()


for _plural in FINALIZED_AT_ADMISSION:
    kopf.on.mutate(
        GROUP,
        VERSION,
        _plural,
        id=FINALIZE_IDS[_plural],
        operations=["CREATE"],
    )(add_finalizer)
