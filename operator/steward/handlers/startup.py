"""Operator start-up and shutdown: settings, logging, metrics, the process context, probes."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from steward.config import Settings
from steward.constants import FINALIZER, GROUP
from steward.exceptions import ConfigurationError
from steward.factory import ProcessContext
from steward.observability import RUCIO_API_CALLS, configure_logging, get_logger

_LOG = get_logger(__name__)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Configure kopf with Steward's names and open the shared clients.

    Refuses to start (the error propagates) on an out-of-date audit schema: acting without
    recording would break the audit guarantee.
    """
    config = Settings()
    configure_logging()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = config.workers
    settings.peering.name = "steward"
    settings.peering.mandatory = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    try:
        memo.context = ProcessContext.from_settings(config)
    except ConfigurationError as exc:
        # A permanent error makes kopf stop the operator instead of retrying start-up.
        raise kopf.PermanentError(str(exc)) from exc
    RUCIO_API_CALLS.set_function(lambda: memo.context.rucio.api_calls)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_address)
    _LOG.info("steward operator started", rucio=repr(memo.context.rucio))


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:  # noqa: ANN401
    """Close the shared clients."""
    context: ProcessContext | None = memo.get("context")
    if context is not None:
        context.close()


@kopf.on.probe(id="auditSchema")
def audit_schema(memo: kopf.Memo, **_: Any) -> str:  # noqa: ANN401
    """Liveness detail: the audit trail's head (proves the database answers)."""
    context: ProcessContext = memo.context
    seq, head = context.audit.head()
    return f"{seq}:{head[:12]}"
