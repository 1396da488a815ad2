"""Wiring, the one composition root: the operator's ProcessContext and Factory, the CLI's context.

As in gafaelfawr: the process context holds what is expensive and shared (the Rucio client
with its rate cap, the database engine, the rule snapshot, the checkpoint loop); a factory
builds the services a handler needs from it, so handlers never construct clients and tests can
build services around real servers directly. `CommandContext` does the same for one CLI
command, building each client on first use, so a setting or a client is wired here only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from kubernetes.client import ApiClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from steward.config import Settings
from steward.exceptions import ConfigurationError, NotFoundError, RucioError, StewardError
from steward.observability import RUCIO_OUTAGES, RUCIO_UP, get_logger
from steward.services.admission import AdmissionService
from steward.services.arrivals import ArrivalFeed
from steward.services.audit import AuditService
from steward.services.campaign import CampaignService
from steward.services.campaign.staging_check import StagingCheckService
from steward.services.checkpoint import (
    CheckpointLoop,
    CheckpointService,
    ConfigMapWitness,
    SigningKey,
    load_signing_key,
)
from steward.services.deletion import DeletionGate
from steward.services.drill import DrillService
from steward.services.find import DEFAULT_PAGE_SIZE, FindService, cluster_owners
from steward.services.gitops import Change, ConsequenceEstimator, GitOpsService
from steward.services.history import HistoryService
from steward.services.ingest import DEFAULT_BATCH_SIZE, IngestService
from steward.services.ledger import LedgerService
from steward.services.oods import OODSService
from steward.services.ownership import owner_tag
from steward.services.plan import (
    CampaignPreview,
    OODSPreview,
    Preview,
    ReplicationPreview,
    RetentionPreview,
    RucioPlanner,
    RucioStatus,
    site_disk_rse,
)
from steward.services.protections import ClusterFacts, facts_from_bodies
from steward.services.queueing import QueueingService
from steward.services.recent_rules import RecentRules
from steward.services.replication import (
    ExpressionCache,
    PlacementLedger,
    ReleaseLimit,
    ReplicationService,
    RuleSnapshot,
)
from steward.services.retention import RetentionService
from steward.services.site import SiteService
from steward.storage.batch import BatchStorage
from steward.storage.database import ensure_current, make_engine, make_sessionmaker
from steward.storage.kubernetes import ConfigMaps, KubeResources, api_client, cluster_identity
from steward.storage.kueue import KueueStorage
from steward.storage.repo import GitRepo
from steward.storage.rucio import RetryPolicy, RucioAvailability, RucioStorage
from steward.storage.workers import WorkerBatches

__all__ = [
    "CommandContext",
    "Factory",
    "ProcessContext",
    "operator_namespace",
    "rucio_availability",
]

_LOG = get_logger(__name__)

_POD_PATCH_WORKERS = 8
"""Threads patching ended pods after their attempts are recorded."""
_KUBE_CONNECTIONS = _POD_PATCH_WORKERS + 4
"""Connections of the process's Kubernetes client: the pod patchers and a few handlers."""


def operator_namespace(settings: Settings) -> str:
    """Where the operator keeps its ConfigMaps (``STEWARD_OPERATOR_NAMESPACE``)."""
    return settings.operator_namespace


def _owner_tag_of(cluster_id: str, change: Change) -> str | None:
    """The owner tag of the rules a planned change's live resource owns.

    Tags hash the cluster's identity and the resource's UID, so only a live object (one the
    cluster gave a UID) can own rules.
    """
    uid = ((change.live or {}).get("metadata") or {}).get("uid")
    return owner_tag(cluster_id, uid) if uid else None


def rucio_availability() -> RucioAvailability:
    """The operator's "does Rucio answer" state, logged and exported on each transition.

    Probes back off from 1 s to 8 s (+-20%), so the process notices within about ten seconds
    that Rucio answers again; refused resources retry after 10 s (kopf's delay), so they
    converge well within 30 s of that.
    """
    availability = RucioAvailability(initial_probe=1.0, max_probe=8.0)
    RUCIO_UP.set(1)

    def report(up: bool, reason: str) -> None:  # noqa: FBT001 - the listener's signature
        RUCIO_UP.set(1 if up else 0)
        if up:
            _LOG.info("Rucio answers again", reason=reason)
        else:
            RUCIO_OUTAGES.inc()
            _LOG.warning("Rucio does not answer; calls are refused until it does", reason=reason)

    availability.listeners.append(report)
    return availability


def _checkpoint_loop(
    settings: Settings, audit: AuditService, key: SigningKey, witness: ConfigMapWitness | None
) -> CheckpointLoop:
    service = CheckpointService(audit, key, witness)
    loop = CheckpointLoop(
        service,
        every_entries=settings.audit_checkpoint_entries,
        every_seconds=settings.audit_checkpoint_interval,
    )
    audit.listeners.append(loop.notify)
    return loop


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
    recent: RecentRules | None = None
    """Reads of just-created rules, shared by the reconciles that wait for one."""
    arrivals: ArrivalFeed | None = None
    """What arrived per scope, one listing shared by the incremental passes of its policies."""
    kube_api: ApiClient = field(default_factory=api_client)
    """The Kubernetes client for what kopf does not do (admission's Site lookups, campaigns'
    Jobs and pods, Kueue's objects)."""
    checkpoints: CheckpointLoop | None = None
    """Signs audit checkpoints; None without a signing key (then nothing is signed)."""
    witness: ConfigMapWitness | None = None
    batch: BatchStorage = field(init=False)
    """Jobs, pods, ConfigMaps and PriorityClasses of campaigns (over ``kube_api``)."""
    worker_batches: WorkerBatches = field(init=False)
    """The worker sites of multi-site campaigns, through MultiKueue's kubeconfig Secrets."""

    def __post_init__(self) -> None:
        self.batch = BatchStorage(self.kube_api, workers=_POD_PATCH_WORKERS)
        self.worker_batches = WorkerBatches(self.kube_api)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, cluster_id: str, kube_api: ApiClient | None = None
    ) -> ProcessContext:
        """Connect to Rucio and the audit store; refuse an out-of-date audit schema.

        ``cluster_id`` is ``settings.cluster_id`` or, when that is unset, what
        `steward.storage.kubernetes.cluster_identity` reads from the cluster. Checkpoints are
        witnessed in ConfigMaps of the operator's namespace, through ``kube_api`` (the
        configured cluster when None), and the signing key may come from a Secret.

        Raises
        ------
        ConfigurationError
            If the audit database is not at this Steward's schema revision, or the signing
            key cannot be read.
        """
        engine = make_engine(settings.database_url)
        ensure_current(engine)
        namespace = operator_namespace(settings)
        kube = kube_api if kube_api is not None else api_client(connections=_KUBE_CONNECTIONS)
        witness = ConfigMapWitness(ConfigMaps(kube, namespace))
        sessions = make_sessionmaker(engine)
        audit = AuditService(sessions)
        key = load_signing_key(settings, namespace, lambda space: ConfigMaps(kube, space))
        # Short in-call retries: an outage must surface quickly as Degraded and be retried by
        # kopf's backoff, not hold every worker thread in a minute-long retry loop. One
        # availability state for every resource: the first unanswered call marks Rucio down,
        # later calls are refused at once until a probe finds it answering.
        rucio = RucioStorage(
            settings,
            retry=RetryPolicy(attempts=3, initial_delay=0.5, deadline=2.0, retry_after=10.0),
            availability=rucio_availability(),
        )
        return cls(
            settings=settings,
            cluster_id=cluster_id,
            rucio=rucio,
            engine=engine,
            sessions=sessions,
            audit=audit,
            snapshot=RuleSnapshot(
                rucio,
                max_age=settings.refresh_interval * 0.9,
                full_resync=settings.full_resync_interval,
                overlap=timedelta(seconds=settings.selection_overlap),
            ),
            ledger=PlacementLedger(),
            expressions=ExpressionCache(max_age=settings.refresh_interval * 0.9),
            recent=RecentRules(rucio),
            # Half an interval: a DID arriving just after a shared listing waits for the next
            # one, so new data is seen at most half an interval later than with a listing
            # per policy, and timers spread over the interval still share most listings.
            arrivals=ArrivalFeed(rucio, max_age=settings.refresh_interval * 0.5),
            checkpoints=(
                _checkpoint_loop(settings, audit, key, witness) if key is not None else None
            ),
            witness=witness,
            kube_api=kube,
        )

    def start_checkpoints(self) -> bool:
        """Publish the public key, sign a first checkpoint, keep signing; False without a key."""
        if self.checkpoints is None:
            return False
        if self.witness is not None:
            self.witness.publish_key(self.checkpoints.public_key)
        self.checkpoints.start()
        return True

    def close(self) -> None:
        """Sign the shutdown checkpoint, release the clients (``@kopf.on.cleanup``)."""
        if self.checkpoints is not None:
            self.checkpoints.stop()
        self.batch.close()
        self.worker_batches.close()
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

    def create_campaign_service(self, facts: ClusterFacts) -> CampaignService:
        """The Campaign reconciler; the release of its staging rules is judged against ``facts``."""
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
            facts=facts,
            gate=self.create_deletion_gate(),
            worker_batches=context.worker_batches,
        )

    def create_staging_check_service(self, facts: ClusterFacts) -> StagingCheckService:
        """The staging AdmissionCheck of this worker site; releases are judged against ``facts``."""
        context = self.context
        return StagingCheckService(
            kueue=KueueStorage(context.kube_api),
            rucio=context.rucio,
            audit=context.audit,
            cluster_id=context.cluster_id,
            actor=self.actor,
            facts=facts,
            gate=self.create_deletion_gate(),
        )

    def create_replication_service(self, facts: ClusterFacts) -> ReplicationService:
        """The ReplicationRule reconciler; its releases are judged against ``facts``."""
        settings = self.context.settings
        return ReplicationService(
            rucio=self.context.rucio,
            audit=self.context.audit,
            snapshot=self.context.snapshot,
            recent=self.context.recent,
            arrivals=self.context.arrivals,
            ledger=self.context.ledger,
            expressions=self.context.expressions,
            actor=self.actor,
            cluster_id=self.context.cluster_id,
            release_limit=ReleaseLimit(
                max_rules=settings.release_max_rules,
                max_fraction=settings.release_max_fraction,
            ),
            max_rules_per_pass=settings.max_rules_per_pass,
            full_resync=timedelta(seconds=settings.full_resync_interval),
            overlap=timedelta(seconds=settings.selection_overlap),
            mark_refresh=timedelta(seconds=10 * settings.refresh_interval),
            gate=self.create_deletion_gate(),
            facts=facts,
        )

    def create_ledger_service(self) -> LedgerService:
        """The campaign ledger's read side, for the deletion gate's campaign questions."""
        return LedgerService(self.context.sessions)

    def create_deletion_gate(self) -> DeletionGate:
        """The deletion gate every path that removes data carries its plans out through."""
        return DeletionGate(self.context.rucio, self.context.audit, actor=self.actor)

    def create_retention_service(self) -> RetentionService:
        """The RetentionPolicy reconciler."""
        return RetentionService(
            rucio=self.context.rucio,
            audit=self.context.audit,
            gate=self.create_deletion_gate(),
            actor=self.actor,
        )

    def create_oods_service(self) -> OODSService:
        """The OODSCache reconciler."""
        return OODSService(
            rucio=self.context.rucio,
            audit=self.context.audit,
            gate=self.create_deletion_gate(),
            cluster_id=self.context.cluster_id,
            actor=self.actor,
        )


@dataclass
class CommandContext:
    """What one ``steward`` command needs, built on first use, closed at the end.

    A command that only reads the audit trail never connects to Rucio or the cluster; one
    that plans never opens the audit database.
    """

    settings: Settings = field(default_factory=Settings)
    database_url: str | None = None
    """Overrides ``settings.database_url`` (``--database-url``)."""
    kubeconfig: Path | None = None
    """The cluster (``--kubeconfig``); $KUBECONFIG or in-cluster when None."""
    actor: str = "steward"
    """Who acts, for the audit trail of commands that change Rucio (``ingest``, ``drill``)."""
    _engine: Engine | None = None
    _api: ApiClient | None = None
    _rucio: RucioStorage | None = None
    _cluster_id: str | None = None

    def engine(self, *, check: bool = True) -> Engine:
        """The audit database; ``check`` refuses one at another schema revision."""
        if self._engine is None:
            self._engine = make_engine(self.database_url or self.settings.database_url)
        if check:
            ensure_current(self._engine)
        return self._engine

    def audit(self) -> AuditService:
        """The audit trail (schema checked)."""
        return AuditService(make_sessionmaker(self.engine()))

    def ledger(self) -> LedgerService:
        """The campaign ledger's read side (``steward report``, ``steward provenance``)."""
        return LedgerService(make_sessionmaker(self.engine()))

    def kube_api(self) -> ApiClient:
        """The Kubernetes API client."""
        if self._api is None:
            self._api = api_client(self.kubeconfig)
        return self._api

    def kube(self) -> KubeResources:
        """Steward's custom resources in the cluster."""
        return KubeResources(self.kube_api())

    def witness(self) -> ConfigMapWitness:
        """The checkpoint and key ConfigMaps in the operator's namespace."""
        namespace = operator_namespace(self.settings)
        return ConfigMapWitness(ConfigMaps(self.kube_api(), namespace))

    def signing_key(self) -> SigningKey | None:
        """The configured signing key (file, or Secret through the cluster), if any."""
        namespace = operator_namespace(self.settings)
        return load_signing_key(
            self.settings, namespace, lambda space: ConfigMaps(self.kube_api(), space)
        )

    def rucio_configured(self) -> bool:
        """Whether Rucio is configured (settings, or a rucio.cfg named by $RUCIO_CONFIG)."""
        return self.settings.rucio_host is not None or "RUCIO_CONFIG" in os.environ

    def rucio(self) -> RucioStorage:
        """The Rucio adapter, with short retries: a command should fail fast and say why."""
        if self._rucio is None:
            self._rucio = RucioStorage(
                self.settings, retry=RetryPolicy(attempts=2, initial_delay=0.5, deadline=5.0)
            )
        return self._rucio

    def cluster_id(self) -> str:
        """The cluster's identity in owner tags (``STEWARD_CLUSTER_ID`` or kube-system's UID)."""
        if self._cluster_id is None:
            self._cluster_id = self.settings.cluster_id or cluster_identity(self.kube_api())
        return self._cluster_id

    def find(self, *, owners: bool = True, page_size: int = DEFAULT_PAGE_SIZE) -> FindService:
        """``steward find``; rule owners come from the cluster's resources when ``owners``.

        Without ``owners`` the command needs no cluster at all.
        """
        index = cluster_owners(self.kube(), self.cluster_id()) if owners else {}
        return FindService(self.rucio(), index, page_size=page_size)

    def ingest(self, *, batch_size: int = DEFAULT_BATCH_SIZE) -> IngestService:
        """``steward ingest`` (no cluster needed)."""
        return IngestService(self.rucio(), self.audit(), actor=self.actor, batch_size=batch_size)

    def drill(self) -> DrillService:
        """``steward drill``."""
        return DrillService(
            self.rucio(), self.audit(), cluster_id=self.cluster_id(), actor=self.actor
        )

    def gitops(
        self,
        start: Path,
        *,
        audit: bool,
        consequences: ConsequenceEstimator | None = None,
        progress: Callable[[str], None] = lambda _line: None,
    ) -> GitOpsService:
        """Plan and apply for the repository holding ``start``."""
        repo = GitRepo.find(start.resolve())
        return GitOpsService(
            kube=self.kube(),
            repo=repo,
            audit=self.audit() if audit else None,
            consequences=consequences,
            progress=progress,
            user=repo.user(),
        )

    def history(self, start: Path) -> HistoryService:
        """Git history interleaved with the audit trail, for the repository holding ``start``."""
        return HistoryService(GitRepo.find(start.resolve()), self.audit())

    def rucio_planner(self) -> RucioPlanner:
        """The Rucio side of a plan, or a planner that says why Rucio was not consulted."""
        if not self.rucio_configured():
            return RucioPlanner.unavailable(
                "Rucio is not configured (set STEWARD_RUCIO_HOST, or RUCIO_CONFIG to a rucio.cfg)"
            )
        try:
            storage = self.rucio()
            account = storage.whoami()
        except (RucioError, ConfigurationError) as error:
            return RucioPlanner.unavailable(f"Rucio does not answer: {error}")
        try:
            cluster_id = self.cluster_id()
        except StewardError as error:
            return RucioPlanner.unavailable(
                f"the cluster's identity (owner tags) cannot be read: {error}"
            )
        try:
            facts = self.cluster_facts()
        except StewardError as error:
            return RucioPlanner.unavailable(
                f"the protections in the cluster (holds, locks, pins) cannot be read: {error}"
            )
        kube = self.kube()

        def previews(planned: ClusterFacts) -> dict[str, Preview]:
            return {
                "ReplicationRule": ReplicationPreview(
                    storage, cluster_id=cluster_id, facts=planned
                ),
                "RetentionPolicy": RetentionPreview(storage, planned),
                "OODSCache": OODSPreview(storage, cluster_id, planned),
                "Campaign": CampaignPreview(
                    storage, functools.partial(site_disk_rse, kube), planned
                ),
            }

        return RucioPlanner(
            RucioStatus(consulted=True, reason=f"{storage!r} as {account}"),
            previews,
            tag_of=functools.partial(_owner_tag_of, cluster_id),
            facts=facts,
        )

    def cluster_facts(self) -> ClusterFacts:
        """What the operator judges deletions against, read from the cluster now.

        A kind whose CRD is not installed yet has no objects.
        """
        kube = self.kube()
        bodies: dict[str, list[dict[str, Any]]] = {}
        for kind in ("RetentionPolicy", "OODSCache", "Site", "Campaign"):
            try:
                bodies[kind] = kube.list(kind)
            except NotFoundError:
                bodies[kind] = []
        return facts_from_bodies(bodies, self.settings.deletion_freeze)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release whatever was built."""
        if self._rucio is not None:
            self._rucio.close()
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
        if self._engine is not None:
            self._engine.dispose()
