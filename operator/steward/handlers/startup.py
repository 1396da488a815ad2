"""Operator start-up and shutdown: settings, logging, metrics, the process context, probes."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kopf
from prometheus_client import start_http_server

from steward.config import Settings
from steward.constants import FINALIZER, GROUP
from steward.exceptions import PermanentError
from steward.factory import ProcessContext
from steward.observability import RUCIO_API_CALLS, configure_logging, get_logger
from steward.storage.kubernetes import api_client, cluster_identity

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
        cluster_id = config.cluster_id or cluster_identity(api_client())
        memo.context = ProcessContext.from_settings(config, cluster_id=cluster_id)
    except PermanentError as exc:
        # A permanent error makes kopf stop the operator instead of retrying start-up.
        raise kopf.PermanentError(str(exc)) from exc
    RUCIO_API_CALLS.set_function(lambda: memo.context.rucio.api_calls)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_address)
    _LOG.info(
        "steward operator started",
        rucio=repr(memo.context.rucio),
        campaigns_of_site=config.site or "none (STEWARD_SITE unset: no Campaign is run)",
    )


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:  # noqa: ANN401
    """Log in as kopf would, through a connection pool of bounded size.

    kopf's own session has no connection limit: each object's worker patches on its own, so
    a burst of a thousand new resources opened 666 TLS connections to the API server, and
    each holds a 256 KiB asyncio buffer plus OpenSSL's, which took the operator to 470 MiB.
    With ``STEWARD_KUBE_CONNECTIONS`` the requests queue for a connection instead. Async,
    because the session must be created in the operator's event loop.
    """
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=Settings().kube_connections, ssl=info.as_ssl_context()
        ),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


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
