"""Operator start-up and shutdown: settings, logging, metrics, the process context, probes.

Also the two things that make one Deployment safe to run: leader election through kopf's
peering (every process but the oldest live one stands by) and the admission webhook's TLS
server.

Start-up also makes kopf drop ``metadata.managedFields`` from the bodies it keeps
(`steward.handlers.watchfilter`) and starts returning free heap to the operating system
now and then (`steward.heap`): what a resource costs in memory (docs/replication.md).

Start-up also starts signing audit checkpoints (`steward.services.checkpoint`) and clean
shutdown signs the last one, so an auditor can tell a trail cut short from one that ended.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import kopf
from prometheus_client import start_http_server

from steward.config import Settings
from steward.constants import FINALIZER
from steward.exceptions import PermanentError
from steward.factory import ProcessContext
from steward.handlers import replication, watchfilter
from steward.handlers.refresh import RefreshLoop
from steward.heap import HeapTrimmer
from steward.observability import (
    AUDIT_CHECKPOINT_AGE,
    RUCIO_API_CALLS,
    configure_logging,
    get_logger,
)
from steward.services.certificates import ensure_certificate
from steward.storage.kubernetes import api_client, cluster_identity
from steward.storage.webhook import WebhookObjects

_LOG = get_logger(__name__)

_PRIORITY_EPOCH_MS: Final = 10**13
"""Above any start time in milliseconds (the year 2286), so priorities stay positive."""


def peering_priority(started: float, tiebreak: int) -> int:
    """Return the kopf peering priority of a process started at ``started`` (epoch seconds).

    kopf runs the live process of highest priority and pauses the others; equal priorities
    pause everyone. Older processes get higher priorities, so a new process (a restarted pod,
    a second replica, a developer's run) stands by instead of taking over from a leader that
    is working, and the milliseconds and ``tiebreak`` (0-999) keep two processes from ever
    tying.
    """
    return (_PRIORITY_EPOCH_MS - int(started * 1000)) * 1000 + tiebreak


async def _no_webhook(_: Any) -> AsyncIterator[Any]:  # noqa: ANN401 - kopf's WebhookFn
    """An admission "server" that serves nothing: the webhook is disabled (port 0)."""
    await asyncio.Event().wait()
    yield  # pragma: no cover - never reached; makes this an async generator


def _webhook_server(config: Settings, context: ProcessContext) -> Any:  # noqa: ANN401
    """Return kopf's HTTPS admission server with the certificate kept in the webhook's Secret."""
    if not config.webhook_port:
        return _no_webhook
    objects = WebhookObjects(
        context.kube_api,
        config.operator_namespace,
        config.webhook_secret,
        config.webhook_configuration,
    )
    hosts = config.webhook_hosts or [
        f"steward.{config.operator_namespace}.svc",
    ]
    certificate = ensure_certificate(objects, hosts)
    directory = Path(tempfile.mkdtemp(prefix="steward-webhook-"))
    (directory / "tls.crt").write_bytes(certificate.cert)
    (directory / "tls.key").write_bytes(certificate.key)
    return kopf.WebhookServer(
        addr=config.webhook_address,
        port=config.webhook_port,
        certfile=directory / "tls.crt",
        pkeyfile=directory / "tls.key",
        cadata=certificate.ca,
    )


def progress_storage() -> kopf.ProgressStorage:
    """Where kopf keeps a handler's retries: ``status.kopf.progress``, beside Steward's status.

    A handler that succeeds at once leaves nothing (kopf stores and purges its record in the
    same patch); one that is retried writes its record in the status patch that also carries
    its Degraded condition, so progress costs no write of its own.
    """
    return kopf.StatusProgressStorage(name="kopf", field="status.kopf.progress")


def diffbase_storage() -> kopf.DiffBaseStorage:
    """Where kopf keeps the last handled spec: ``status.kopf.lastHandledConfiguration``.

    As an annotation (kopf's default) it cost every handled change a patch of the object
    of its own, beside the handler's status patch; in the status it rides in that patch: a
    thousand new resources save a thousand writes (docs/replication.md, "At scale"). Only
    ``spec`` is kept (``metadata`` is ignored): every change handler of Steward watches the
    spec only (``field="spec"``), so a label or annotation edit (a GitOps commit stamp, an
    approval) gives kopf no diff, hence no write. An object handled before this setting
    has no stored spec there: kopf calls its create handlers once, which are its resume
    handlers too, and both reconcile idempotently.
    """
    return kopf.StatusDiffBaseStorage(
        name="kopf", field="status.kopf.lastHandledConfiguration", ignored_fields=["metadata"]
    )


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **indices: Any) -> None:  # noqa: ANN401
    """Configure kopf with Steward's names, open the shared clients, start the refresh loop.

    Refuses to start (the error propagates) on an out-of-date audit schema: acting without
    recording would break the audit guarantee. kopf passes its indexes (``indices``) to
    start-up handlers too; the ReplicationRule refresh loop judges deletions against them.
    """
    config = Settings()
    configure_logging()
    # Both before any watcher starts (kopf runs the startup handlers first): see their modules.
    if config.strip_managed_fields:
        watchfilter.install()
    if config.heap_trim_interval:
        memo.heap_trimmer = HeapTrimmer(config.heap_trim_interval)
        memo.heap_trimmer.start()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = progress_storage()
    settings.persistence.diffbase_storage = diffbase_storage()
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = config.workers
    # Leader election: with --standalone (tests, the dev stack) kopf skips peering entirely;
    # otherwise the peering object must exist (mandatory), so a missing one stops every
    # process from acting instead of letting each act alone.
    settings.peering.name = config.peering_name
    settings.peering.clusterwide = True
    settings.peering.mandatory = not settings.peering.standalone
    settings.peering.priority = peering_priority(time.time(), random.randrange(1000))  # noqa: S311
    settings.peering.lifetime = config.peering_lifetime
    # The CRDs are installed before the operator: no watch on CRDs and namespaces (and no
    # RBAC for them); a CRD added later is served after a restart.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    try:
        kube = api_client()
        cluster_id = config.cluster_id or cluster_identity(kube)
        memo.context = ProcessContext.from_settings(config, cluster_id=cluster_id, kube_api=kube)
        settings.admission.server = _webhook_server(config, memo.context)
        if memo.context.start_checkpoints():
            loop = memo.context.checkpoints
            AUDIT_CHECKPOINT_AGE.set_function(lambda: loop.age() if loop else float("nan"))
        else:
            _LOG.warning(
                "audit checkpoints off: no signing key (set STEWARD_AUDIT_SIGNING_KEY_FILE or "
                "STEWARD_AUDIT_SIGNING_KEY_SECRET); a deleted tail or a rewritten audit trail "
                "cannot be detected"
            )
    except PermanentError as exc:
        # A permanent error makes kopf stop the operator instead of retrying start-up.
        raise kopf.PermanentError(str(exc)) from exc
    RUCIO_API_CALLS.set_function(lambda: memo.context.rucio.api_calls)
    memo.refresh = replication.refresh_loop(memo, indices, settings)
    memo.refresh.start()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_address)
    _LOG.info(
        "steward operator started",
        rucio=repr(memo.context.rucio),
        peering=None if settings.peering.standalone else config.peering_name,
        priority=settings.peering.priority,
        webhook_port=config.webhook_port or None,
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
    """Stop the refresh loop; close the shared clients; stop returning free heap."""
    loop: RefreshLoop | None = memo.get("refresh")
    if loop is not None:
        loop.stop()
    context: ProcessContext | None = memo.get("context")
    if context is not None:
        context.close()
    trimmer: HeapTrimmer | None = memo.get("heap_trimmer")
    if trimmer is not None:
        trimmer.stop()


@kopf.on.probe(id="auditSchema")
async def audit_schema(memo: kopf.Memo, **_: Any) -> str:  # noqa: ANN401
    """Liveness detail: the audit trail's head (proves the database answers).

    Async, and read in a thread of asyncio's own pool rather than kopf's handler pool: the
    probe must answer even when every handler thread is busy.
    """
    context: ProcessContext = memo.context
    seq, head = await asyncio.to_thread(context.audit.head)
    return f"{seq}:{head[:12]}"


@kopf.on.probe(id="rucio")
async def rucio_state(memo: kopf.Memo, **_: Any) -> str:  # noqa: ANN401
    """Liveness detail: whether Rucio answers (``up``, or since when and why not).

    Information only, never a failure: restarting the operator does not bring Rucio back,
    and a liveness probe that failed during a Rucio outage would only add restarts to it.
    """
    context: ProcessContext = memo.context
    return context.rucio.availability.describe()
