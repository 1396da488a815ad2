"""The validating admission webhook: ``steward validate``'s checks at ``kubectl apply`` time.

One kopf validating handler per kind; the handler id is the last part of the webhook's URL
path (``/validate-<plural>``), which the ValidatingWebhookConfiguration rendered by
``steward render`` names. The decisions are `steward.services.admission`'s.
"""

from __future__ import annotations

from typing import Any, Final

import kopf

from steward.constants import GROUP, VERSION
from steward.handlers.common import factory
from steward.models import KINDS
from steward.observability import ADMISSION_REVIEWS

__all__ = ["WEBHOOK_IDS", "review"]

WEBHOOK_IDS: Final = {info.kind: f"validate-{info.plural}" for info in KINDS}
"""Handler id (and URL path) of each kind's webhook."""


def review(
    body: kopf.Body,
    memo: kopf.Memo,
    warnings: list[str],
    **_: Any,  # noqa: ANN401
) -> None:
    """Refuse a resource that ``steward validate`` would refuse, with validate's message."""
    result = factory(memo).create_admission_service().review(dict(body))
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
