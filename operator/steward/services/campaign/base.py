"""The campaign service's shared ground: one pass's state, clients, audit, the Site."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.orm import Session, sessionmaker

from steward.constants import API_VERSION
from steward.exceptions import NotFoundError, PermanentError, TransientError
from steward.models.campaign import (
    Campaign,
    CampaignSpec,
    Priority,
    Step,
    StepPhase,
)
from steward.models.site import RSEType, Site
from steward.observability import get_logger
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.deletion import DeletionGate
from steward.services.ownership import owner_tag
from steward.services.protections import ClusterFacts
from steward.services.queueing import WorkloadState
from steward.storage.batch import (
    BatchStorage,
    Owner,
)
from steward.storage.kubernetes import KubeResources
from steward.storage.ledger import (
    LedgerCampaign,
    LedgerStore,
)
from steward.storage.rucio import RucioStorage
from steward.storage.workers import WorkerBatches

__all__ = [
    "COMPLETION_INDEX",
    "LOG",
    "MOUNT_PATH",
    "CampaignBase",
    "CampaignPass",
    "disk_rse",
    "iso",
    "now_utc",
]

MOUNT_PATH: Final = "/steward/invocations"
"""Where each pod finds its shard's data ids: the file named by ``$JOB_COMPLETION_INDEX``."""

COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
LOG = get_logger(__name__)


def now_utc() -> datetime:
    """The current time, in UTC (the service's default clock)."""
    return datetime.now(UTC)


@dataclass
class CampaignPass:
    """Everything one reconcile of one campaign works on."""

    campaign: Campaign
    ref: ResourceRef
    uid: str
    namespace: str
    tag: str
    now: datetime
    record: LedgerCampaign | None = None
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The campaign's Jobs in the cluster, by name."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    """(reason, message) for the Degraded condition."""
    waiting: list[str] = field(default_factory=list)
    """What the campaign waits for (the Progressing condition's message)."""
    gates: dict[str, StepPhase] = field(default_factory=dict)
    """Why a step that has not started is held."""
    staging: dict[str, Any] | None = None
    staged: bool | None = None
    site: Site | None = None
    unrecorded: int = 0
    config_maps: set[str] = field(default_factory=set)
    """ConfigMaps known to exist (shards' are shared by every step's Jobs)."""
    queue: str | None = None
    """The LocalQueue of the campaign's Jobs on Kueue (`QueueSide`), None when not on Kueue."""
    workers: list[tuple[str, BatchStorage]] | None = None
    """The batch API of each worker site of a multi-site campaign reached this pass, by site
    (`CampaignBase._workers`)."""
    unreachable: dict[str, str] = field(default_factory=dict)
    """Worker sites that could not be reached this pass, and why."""
    workloads: dict[str, tuple[str, WorkloadState, bool]] | None = None
    """Kueue's Workload of each Job, read once per pass (`QueueSide`)."""
    audits: list[AuditRecord] = field(default_factory=list)
    """Audit records of ledger changes, written once their transaction committed (the audit
    trail shares the database, and SQLite has one writer at a time)."""

    @property
    def spec(self) -> CampaignSpec:
        """The campaign's spec."""
        return self.campaign.spec

    def step(self, name: str) -> Step | None:
        """The step of that name in the spec, if any."""
        return next((s for s in self.spec.steps if s.name == name), None)


@dataclass(kw_only=True)
class CampaignBase:
    """What every part of the campaign service shares: clients, the audit trail, the Site."""

    batch: BatchStorage
    resources: KubeResources
    rucio: RucioStorage
    sessions: sessionmaker[Session]
    audit: AuditService
    cluster_id: str
    actor: str = "steward-operator"
    clock: Callable[[], datetime] = field(default=now_utc)
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    """What the deletion gate judges the release of staging rules against (holds, locks,
    pins, freezes, other campaigns): the operator's indexes, read when the pass began."""
    gate: DeletionGate | None = None
    """The deletion gate (one over ``rucio`` and ``audit`` when None)."""
    worker_batches: WorkerBatches | None = None
    """The worker clusters of multi-site campaigns, through their kubeconfig Secrets; None
    reads pods in this cluster only."""

    # -- pass set-up --------------------------------------------------------------------------

    def _begin(self, campaign: Campaign, ref: ResourceRef) -> CampaignPass:
        if ref.uid is None or ref.namespace is None:
            msg = "a Campaign needs metadata.uid and a namespace"
            raise PermanentError(msg)
        return CampaignPass(
            campaign=campaign,
            ref=ref,
            uid=ref.uid,
            namespace=ref.namespace,
            tag=owner_tag(self.cluster_id, ref.uid),
            now=self.clock(),
        )

    def _audit(self, work: CampaignPass, action: str, **kwargs: Any) -> None:  # noqa: ANN401
        self.audit.record(AuditRecord(resource=work.ref, action=action, actor=self.actor, **kwargs))

    def _priority_classes(self, work: CampaignPass) -> None:
        changed = self.batch.ensure_priority_classes({p.name.lower(): p.value for p in Priority})
        for line in changed:
            self._audit(work, "create-priority-class", message=line)

    def _site(self, work: CampaignPass) -> Site:
        """The campaign's Site, found in a listing.

        The operator's role lists Sites for kopf and the webhook; it needs no ``get`` for this.
        """
        if work.site is None:
            body = next(
                (
                    item
                    for item in self.resources.list("Site")
                    if item["metadata"]["name"] == work.spec.site
                ),
                None,
            )
            if body is None:
                msg = f"Site {work.spec.site!r} does not exist; the campaign's site must be a Site"
                raise PermanentError(msg)
            work.site = Site.model_validate({k: v for k, v in body.items() if k != "status"})
        return work.site

    def _named_site(self, work: CampaignPass, name: str) -> Site:
        if name == work.spec.site:
            return self._site(work)
        body = next(  # listed, as `_site` does: the operator's role may list Sites, not get them
            (item for item in self.resources.list("Site") if item["metadata"]["name"] == name),
            None,
        )
        if body is None:
            msg = f"sites lists {name!r}, which is not a Site"
            raise PermanentError(msg)
        return Site.model_validate({k: v for k, v in body.items() if k != "status"})

    def _workers(self, work: CampaignPass) -> list[tuple[str, BatchStorage]]:
        """The batch API of each worker site of a multi-site campaign (none otherwise).

        Each is reached with the kubeconfig Secret its Site names (the one MultiKueue uses).
        A site that cannot be reached (its Secret missing or unusable, its cluster down) is
        left out and named in ``work.unreachable``: what ran there is recorded once it is
        back, as its pods wait for that behind Steward's finalizer.
        """
        if work.workers is not None:
            return work.workers
        work.workers = []
        if not work.spec.sites or self.worker_batches is None:
            return work.workers
        for name in work.spec.sites:
            site = self._named_site(work, name)
            secret = site.spec.batch.kubeconfig_secret if site.spec.batch else None
            if secret is None:
                work.unreachable[name] = "its Site names no spec.batch.kubeconfigSecret"
                continue
            try:
                work.workers.append((name, self.worker_batches.batch(secret)))
            except (NotFoundError, PermanentError, TransientError) as error:
                work.unreachable[name] = str(error)
        return work.workers

    def _unrecorded(self, work: CampaignPass, labels: Mapping[str, str]) -> int | None:
        """Pods with LABELS whose attempt is not recorded, here and at every worker site.

        None when a worker site is out of reach: its pods are unknown, and whatever depends
        on there being none (a rerun of a lost Job's invocations, the end of a deletion)
        waits rather than risk a second pod of one invocation.
        """
        count = len(self.batch.unrecorded_pods(work.namespace, labels))
        for site, batch in self._workers(work):
            if site in work.unreachable:
                break
            try:
                count += len(batch.unrecorded_pods(work.namespace, labels))
            except TransientError as error:
                work.unreachable[site] = str(error)
        return None if work.unreachable else count

    def _disk_rse(self, work: CampaignPass) -> str:
        """The site's first DISK RSE: where inputs are staged and outputs written by default."""
        site = self._site(work)
        rse = disk_rse(site)
        if rse is None:
            name = site.metadata.name
            msg = f"Site {name!r} has no DISK RSE to stage inputs and write outputs to"
            raise PermanentError(msg)
        return rse

    def _owner(self, work: CampaignPass) -> Owner:
        return Owner(API_VERSION, "Campaign", work.ref.name, work.uid)

    # -- 3e. terminate, close out -------------------------------------------------------------

    def _job_names(self, work: CampaignPass) -> list[str]:
        with self.sessions() as session:
            planned = [job.name for job in LedgerStore(session).jobs(work.uid)]
        return sorted(set(planned) | set(work.live))


def disk_rse(site: Site) -> str | None:
    """The site's first DISK RSE: where inputs are staged and outputs written by default."""
    return next((rse.name for rse in site.spec.rses if rse.type is RSEType.DISK), None)


def iso(value: datetime | None) -> str | None:
    """An API-style timestamp (``2026-11-24T10:00:00Z``); naive values are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
