"""Wiring: one ProcessContext per operator process, one Factory per unit of work.

As in gafaelfawr: the process context holds what is expensive and shared (the Rucio client
with its rate cap, the database engine, the rule snapshot); a factory builds the services a
handler needs from it, so handlers never construct clients and tests can build services
around real servers directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Self

from kubernetes.client import ApiClient
from sqlalchemy import Engine

from steward.config import Settings
from steward.services.admission import AdmissionService
from steward.services.audit import AuditService
from steward.services.drill import DrillService
from steward.services.find import DEFAULT_PAGE_SIZE, FindService, cluster_owners
from steward.services.ingest import DEFAULT_BATCH_SIZE, IngestService
from steward.services.replication import (
    ExpressionCache,
    PlacementLedger,
    ReleaseLimit,
    ReplicationService,
    RuleSnapshot,
)
from steward.services.site import SiteService
from steward.storage.database import ensure_current, make_engine, make_sessionmaker
from steward.storage.kubernetes import KubeResources, api_client, cluster_identity
from steward.storage.rucio import RetryPolicy, RucioStorage

__all__ = ["CommandContext", "Factory", "ProcessContext"]


@dataclass
class ProcessContext:
    """Shared clients of one operator process."""

    settings: Settings
    cluster_id: str
    """This cluster's identity in owner tags (`steward.services.ownership`)."""
    rucio: RucioStorage
    engine: Engine
    audit: AuditService
    snapshot: RuleSnapshot
    ledger: PlacementLedger
    expressions: ExpressionCache
    kube_api: ApiClient = field(default_factory=api_client)
    """The Kubernetes client for what kopf does not do (admission's Site lookups)."""

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
        return cls(
            settings=settings,
            cluster_id=cluster_id,
            rucio=rucio,
            engine=engine,
            audit=AuditService(make_sessionmaker(engine)),
            snapshot=RuleSnapshot(rucio, max_age=settings.refresh_interval * 0.9),
            ledger=PlacementLedger(),
            expressions=ExpressionCache(max_age=settings.refresh_interval * 0.9),
            kube_api=kube_api if kube_api is not None else api_client(),
        )

    def close(self) -> None:
        """Release the clients (``@kopf.on.cleanup``)."""
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

    def create_admission_service(self) -> AdmissionService:
        """The admission reviewer (the validating webhook's checks)."""
        return AdmissionService(KubeResources(self.context.kube_api))

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


class CommandContext:
    """Clients of one operations command (``find``, ``ingest``, ``drill``), opened on first use.

    The operator opens everything at start (`ProcessContext`); a command opens only what it
    uses: ``find`` needs no audit store and ``ingest`` no cluster. `close` releases whatever
    was opened.

    Parameters
    ----------
    settings
        Rucio, audit store and cluster identity (``STEWARD_*``).
    kubeconfig
        The cluster (``$KUBECONFIG`` or in-cluster when None).
    actor
        Who acts, for the audit trail.
    """

    def __init__(self, settings: Settings, *, kubeconfig: Path | None = None, actor: str) -> None:
        self.settings = settings
        self.kubeconfig = kubeconfig
        self.actor = actor
        self._opened: list[Any] = []

    @cached_property
    def rucio(self) -> RucioStorage:
        """Rucio, with short in-call retries: a person is waiting."""
        rucio = RucioStorage(
            self.settings,
            retry=RetryPolicy(attempts=3, initial_delay=0.5, deadline=10.0, retry_after=10.0),
        )
        self._opened.append(rucio)
        return rucio

    @cached_property
    def audit(self) -> AuditService:
        """The audit store; refused when its schema is not this Steward's."""
        engine = make_engine(self.settings.database_url)
        self._opened.append(engine)
        ensure_current(engine)
        return AuditService(make_sessionmaker(engine))

    @cached_property
    def kube_api(self) -> ApiClient:
        """The cluster's API server."""
        api = api_client(self.kubeconfig)
        self._opened.append(api)
        return api

    @cached_property
    def cluster_id(self) -> str:
        """The cluster's identity in owner tags (``STEWARD_CLUSTER_ID`` or kube-system's UID)."""
        return self.settings.cluster_id or cluster_identity(self.kube_api)

    def create_find_service(
        self, *, owners: bool = True, page_size: int = DEFAULT_PAGE_SIZE
    ) -> FindService:
        """``steward find``; rule owners come from the cluster's resources when ``owners``."""
        index = cluster_owners(KubeResources(self.kube_api), self.cluster_id) if owners else {}
        return FindService(self.rucio, index, page_size=page_size)

    def create_ingest_service(self, *, batch_size: int = DEFAULT_BATCH_SIZE) -> IngestService:
        """``steward ingest``."""
        return IngestService(self.rucio, self.audit, actor=self.actor, batch_size=batch_size)

    def create_drill_service(self) -> DrillService:
        """``steward drill``."""
        return DrillService(self.rucio, self.audit, cluster_id=self.cluster_id, actor=self.actor)

    def close(self) -> None:
        """Close what was opened."""
        for opened in reversed(self._opened):
            if isinstance(opened, Engine):
                opened.dispose()
            else:
                opened.close()
        self._opened.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
