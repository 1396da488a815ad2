"""Wiring: one ProcessContext per operator process, one Factory per unit of work.

As in gafaelfawr: the process context holds what is expensive and shared (the Rucio client
with its rate cap, the database engine, the rule snapshot); a factory builds the services a
handler needs from it, so handlers never construct clients and tests can build services
around real servers directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubernetes.client import ApiClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from steward.config import Settings
from steward.services.admission import AdmissionService
from steward.services.audit import AuditService
from steward.services.campaign import CampaignService
from steward.services.ledger import LedgerService
from steward.services.queueing import QueueingService
from steward.services.replication import (
    ExpressionCache,
    PlacementLedger,
    ReleaseLimit,
    ReplicationService,
    RuleSnapshot,
)
from steward.services.site import SiteService
from steward.storage.batch import BatchStorage
from steward.storage.database import ensure_current, make_engine, make_sessionmaker
from steward.storage.kubernetes import KubeResources, api_client
from steward.storage.kueue import KueueStorage
from steward.storage.rucio import RetryPolicy, RucioStorage

__all__ = ["Factory", "ProcessContext", "create_ledger_service"]

_POD_PATCH_WORKERS = 8
"""Threads patching ended pods after their attempts are recorded."""
_KUBE_CONNECTIONS = _POD_PATCH_WORKERS + 4
"""Connections of the process's Kubernetes client: the pod patchers and a few handlers."""


@dataclass
class ProcessContext:
    """Shared clients of one operator process."""

    settings: Settings
    cluster_id: str
    """This cluster's identity in owner tags (`steward.services.ownership`)."""
    rucio: RucioStorage
    engine: Engine
    sessions: sessionmaker[Session]
    audit: AuditService
    snapshot: RuleSnapshot
    ledger: PlacementLedger
    expressions: ExpressionCache
    kube_api: ApiClient = field(default_factory=api_client)
    """The Kubernetes client for what kopf does not do (admission's Site lookups, campaigns'
    Jobs and pods)."""
    batch: BatchStorage = field(init=False)
    """Jobs, pods, ConfigMaps and PriorityClasses of campaigns (over ``kube_api``)."""

    def __post_init__(self) -> None:
        self.batch = BatchStorage(self.kube_api, workers=_POD_PATCH_WORKERS)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, cluster_id: str, kube_api: ApiClient | None = None
    ) -> ProcessContext:
        """Connect to Rucio and the audit store; refuse an out-of-date audit schema.

        ``cluster_id`` is ``settings.cluster_id`` or, when that is unset, what
        `steward.storage.kubernetes.cluster_identity` reads from the cluster.

        Raises
        ------
        ConfigurationError
            If the audit database is not at this Steward's schema revision.
        """
        engine = make_engine(settings.database_url)
        ensure_current(engine)
        # Short in-call retries: an outage must surface quickly as Degraded and be retried by
        # kopf's backoff, not hold every worker thread in a minute-long retry loop.
        rucio = RucioStorage(
            settings,
            retry=RetryPolicy(attempts=3, initial_delay=0.5, deadline=5.0, retry_after=10.0),
        )
        sessions = make_sessionmaker(engine)
        kube = kube_api if kube_api is not None else api_client(connections=_KUBE_CONNECTIONS)
        return cls(
            settings=settings,
            cluster_id=cluster_id,
            rucio=rucio,
            engine=engine,
            sessions=sessions,
            audit=AuditService(sessions),
            snapshot=RuleSnapshot(rucio, max_age=settings.refresh_interval * 0.9),
            ledger=PlacementLedger(),
            expressions=ExpressionCache(max_age=settings.refresh_interval * 0.9),
            kube_api=kube,
        )

    def close(self) -> None:
        """Release the clients (``@kopf.on.cleanup``)."""
        self.batch.close()
        self.rucio.close()
        self.engine.dispose()
        self.kube_api.close()  # type: ignore[no-untyped-call]


@dataclass
class Factory:
    """Builds services for one unit of work from the process context."""

    context: ProcessContext
    actor: str = "steward-operator"

    def create_site_service(self) -> SiteService:
        """The Site reconciler."""
        return SiteService(self.context.rucio, self.context.audit, actor=self.actor)

    def create_queueing_service(self) -> QueueingService:
        """Kueue's objects for this cluster's Site and campaigns."""
        return QueueingService(
            KueueStorage(self.context.kube_api), KubeResources(self.context.kube_api)
        )

    def create_admission_service(self) -> AdmissionService:
        """The admission reviewer (the validating webhook's checks)."""
        return AdmissionService(KubeResources(self.context.kube_api))

    def create_campaign_service(self) -> CampaignService:
        """The Campaign reconciler."""
        context = self.context
        return CampaignService(
            batch=context.batch,
            resources=KubeResources(context.kube_api),
            rucio=context.rucio,
            sessions=context.sessions,
            audit=context.audit,
            cluster_id=context.cluster_id,
            actor=self.actor,
            queueing=self.create_queueing_service(),
        )

    def create_replication_service(self) -> ReplicationService:
        """The ReplicationRule reconciler."""
        settings = self.context.settings
        return ReplicationService(
            rucio=self.context.rucio,
            audit=self.context.audit,
            snapshot=self.context.snapshot,
            ledger=self.context.ledger,
            expressions=self.context.expressions,
            actor=self.actor,
            cluster_id=self.context.cluster_id,
            release_limit=ReleaseLimit(
                max_rules=settings.release_max_rules,
                max_fraction=settings.release_max_fraction,
            ),
        )


def create_ledger_service(settings: Settings) -> LedgerService:
    """The ledger's read side for ``steward report`` and ``steward provenance``.

    Raises
    ------
    ConfigurationError
        If the database is not at this Steward's schema revision.
    """
    engine = make_engine(settings.database_url)
    ensure_current(engine)
    return LedgerService(make_sessionmaker(engine))
