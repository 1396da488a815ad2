"""Campaign queueing on Kueue: quotas per site, priorities, and dispatch across sites.

A site's batch cluster is shared: campaigns compete with each other and with other tenants,
and the same processing runs at more than one site (LDM-592 LDF104: the same DRP at NCSA and in
France). Steward does not schedule; it renders what a Site declares (``spec.batch``) into the
objects of Kueue, the Kubernetes batch queueing engine, and labels campaign Jobs so Kueue
admits them:

- a ResourceFlavor per node pool (``<site>-<pool>``, its node labels);
- a ClusterQueue per queue of the site (``<site>-<queue>``), with nominal quotas per pool, in
  the site's cohort, preempting lower priorities within the queue and reclaiming lent quota,
  with a fair-sharing weight;
- a WorkloadPriorityClass per campaign priority level (``steward-campaign-<level>``, the same
  values as the PriorityClasses);
- a LocalQueue per queue in each campaign namespace (``<site>-<queue>``).

A campaign that lists several ``sites`` runs through MultiKueue from the cluster where it is
applied (the manager): one ClusterQueue per ordered site list (``sites-<a>-<b>``) whose
AdmissionCheck sends each Job to the first worker in that order with room, and on to the next
after Kueue's dispatch round (the Incremental dispatcher); a MultiKueueCluster per site
reaches its cluster with the kubeconfig Secret the Site names. Each worker's own Steward gives
the campaign's namespace a LocalQueue of the same name pointing to its site's queue, which is
where MultiKueue creates the copy of the Job.

Everything here is either a pure function from models to manifests (tests call them
directly) or `QueueingService`, which applies them, prunes what it rendered before and no
longer does, and reads Kueue's state back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from steward.constants import CAMPAIGN_PRIORITY_CLASS_PREFIX, GROUP
from steward.exceptions import NotFoundError, PermanentError, TransientError
from steward.models.campaign import Priority
from steward.models.site import BatchCapacity, QueueStatus, Site
from steward.services.site import Outcome
from steward.storage.kubernetes import KubeResources
from steward.storage.kueue import KUEUE_API_VERSION, KueueStorage

__all__ = [
    "MANAGED_BY",
    "MULTIKUEUE_CONTROLLER",
    "PRIORITY_LABEL",
    "QUEUE_LABEL",
    "SITE_LABEL",
    "STAGING_ANNOTATION",
    "STAGING_CHECK",
    "STAGING_CONTROLLER",
    "STAGING_FIELD_MANAGER",
    "QueueingService",
    "WorkloadState",
    "cluster_queue_name",
    "flavor_name",
    "job_labels",
    "local_queue",
    "multisite_name",
    "render_multisite",
    "render_priority_classes",
    "render_site",
    "render_staging_check",
    "resolve_queue",
    "worker_local_queue",
    "workload_state",
]

QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
"""Label naming the LocalQueue a Job is submitted to."""

PRIORITY_LABEL: Final = "kueue.x-k8s.io/priority-class"
"""Label naming a Job's WorkloadPriorityClass."""

MULTIKUEUE_CONTROLLER: Final = "kueue.x-k8s.io/multikueue"
"""``controllerName`` of MultiKueue's AdmissionCheck."""

STAGING_CONTROLLER: Final = f"{GROUP}/staging"
"""``controllerName`` of the worker's AdmissionCheck that Steward itself answers: a copy of a
multi-site Job is admitted at a worker only once its inputs are on that site's disk."""

STAGING_CHECK: Final = "steward-staging"
"""The worker's AdmissionCheck of `STAGING_CONTROLLER` (one per cluster)."""

STAGING_ANNOTATION: Final = f"{GROUP}/staging-dataset"
"""Pod template annotation naming the Rucio dataset of a shard's inputs (``scope:name``):
the manager registers it, Kueue copies the template into the Workload's ``podSets``,
MultiKueue copies the Workload to each worker, the worker stages it."""

STAGING_FIELD_MANAGER: Final = "steward-staging"
"""The field manager of the staging check's fields: its entry in a ClusterQueue's admission
checks and in a Workload's check states, the AdmissionCheck's ``Active`` condition."""

SITE_LABEL: Final = f"{GROUP}/site"
"""Label on every Kueue object Steward renders for a site: what pruning lists."""

MULTISITE_LABEL: Final = f"{GROUP}/multisite"
"""Label on the manager's objects for one ordered site list."""

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "steward"}

MULTISITE_FLAVOR: Final = "steward-multisite"
"""The manager's flavor: no node labels, so nothing is injected before a worker admits."""

_RESOURCES: Final = ("cpu", "memory")


def flavor_name(site: str, pool: str) -> str:
    """The ResourceFlavor of a site's node pool."""
    return f"{site}-{pool}"


def cluster_queue_name(site: str, queue: str) -> str:
    """The ClusterQueue (and LocalQueue) of a site's queue."""
    return f"{site}-{queue}"


def priority_class_name(priority: str) -> str:
    """The WorkloadPriorityClass of a campaign priority level (as its PriorityClass)."""
    return f"{CAMPAIGN_PRIORITY_CLASS_PREFIX}{priority}"


def multisite_name(sites: Sequence[str]) -> str:
    """The name of the manager's queue for SITES in this order (``sites-ncsa-in2p3``).

    Order matters (it is the dispatch preference), so it is part of the name; a name longer
    than a label value allows ends in a hash of the full list instead.
    """
    name = "sites-" + "-".join(sites)
    if len(name) <= 63:  # noqa: PLR2004 - the DNS label limit of Kubernetes names
        return name
    digest = hashlib.sha256(",".join(sites).encode()).hexdigest()[:10]
    return f"{name[:52].rstrip('-')}-{digest}"


def _labels(site: str | None = None, multisite: str | None = None) -> dict[str, str]:
    labels = dict(MANAGED_BY)
    if site is not None:
        labels[SITE_LABEL] = site
    if multisite is not None:
        labels[MULTISITE_LABEL] = multisite
    return labels


def _meta(name: str, labels: Mapping[str, str], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _batch(site: Site) -> BatchCapacity:
    if site.spec.batch is None:
        msg = f"Site {site.metadata.name} declares no batch capacity (spec.batch)"
        raise PermanentError(msg)
    return site.spec.batch


def render_priority_classes() -> list[dict[str, Any]]:
    """One WorkloadPriorityClass per campaign priority level, valued as the PriorityClass.

    Kueue orders and preempts workloads by these values; they are independent of the pods'
    PriorityClass, which the kube-scheduler uses.
    """
    return [
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "WorkloadPriorityClass",
            "metadata": _meta(priority_class_name(level.name.lower()), MANAGED_BY),
            "value": int(level),
            "description": f"Steward campaigns of priority {level.name.lower()}",
        }
        for level in Priority
    ]


def render_site(site: Site) -> list[dict[str, Any]]:
    """The ResourceFlavors and ClusterQueues of a site's batch capacity.

    Each ClusterQueue preempts lower-priority workloads of its own queue for a higher one
    (urgent before low), reclaims quota it lent to its cohort, may borrow idle quota of the
    cohort, and shares what is borrowed fairly by its weight.
    """
    batch = _batch(site)
    name = site.metadata.name
    labels = _labels(site=name)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "ResourceFlavor",
            "metadata": _meta(flavor_name(name, pool.name), labels),
            "spec": {"nodeLabels": dict(pool.node_labels)} if pool.node_labels else {},
        }
        for pool in batch.node_pools
    ]
    for queue in batch.queues:
        flavors = []
        for quota in queue.quotas:
            resources = []
            for resource in _RESOURCES:
                entry: dict[str, Any] = {"name": resource, "nominalQuota": getattr(quota, resource)}
                if quota.borrowing_limit and resource in quota.borrowing_limit:
                    entry["borrowingLimit"] = quota.borrowing_limit[resource]
                if quota.lending_limit and resource in quota.lending_limit:
                    entry["lendingLimit"] = quota.lending_limit[resource]
                resources.append(entry)
            flavors.append({"name": flavor_name(name, quota.pool), "resources": resources})
        objects.append(
            {
                "apiVersion": KUEUE_API_VERSION,
                "kind": "ClusterQueue",
                "metadata": _meta(cluster_queue_name(name, queue.name), labels),
                "spec": {
                    "cohortName": batch.cohort or name,
                    "namespaceSelector": {},
                    "queueingStrategy": "BestEffortFIFO",
                    "resourceGroups": [{"coveredResources": list(_RESOURCES), "flavors": flavors}],
                    "preemption": {
                        "withinClusterQueue": "LowerPriority",
                        "reclaimWithinCohort": "Any",
                        "borrowWithinCohort": {"policy": "Never"},
                    },
                    "fairSharing": {"weight": _weight(queue.weight)},
                },
            }
        )
    return objects


def _weight(value: float) -> str:
    """A fair-sharing weight as a Kubernetes quantity (``1``, ``2``, ``500m``)."""
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def resolve_queue(site: Site, queue: str | None) -> str:
    """The ClusterQueue/LocalQueue name a campaign at SITE uses: its QUEUE or the default.

    Raises
    ------
    PermanentError
        The site declares no batch capacity, or QUEUE is not one of its queues.
    """
    batch = _batch(site)
    chosen = queue or batch.default
    names = [q.name for q in batch.queues]
    if chosen not in names:
        msg = (
            f"queue {chosen!r} is not a queue of Site {site.metadata.name} "
            f"(it has: {', '.join(names)})"
        )
        raise PermanentError(msg)
    return cluster_queue_name(site.metadata.name, chosen)


def local_queue(namespace: str, name: str, cluster_queue: str, site: str) -> dict[str, Any]:
    """A LocalQueue NAME in NAMESPACE submitting to CLUSTER_QUEUE."""
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "LocalQueue",
        "metadata": _meta(name, _labels(site=site), namespace),
        "spec": {"clusterQueue": cluster_queue},
    }


def worker_local_queue(
    site: Site, sites: Sequence[str], namespace: str, queue: str | None = None
) -> dict[str, Any]:
    """The LocalQueue a worker site gives a multi-site campaign's namespace.

    MultiKueue creates its copy of a Job in the worker under the manager's queue name
    (`multisite_name`); this LocalQueue, of that name, submits it to the worker site's queue.
    """
    return local_queue(
        namespace, multisite_name(sites), resolve_queue(site, queue), site.metadata.name
    )


def render_staging_check() -> dict[str, Any]:
    """The worker's AdmissionCheck answered by its own Steward (`STAGING_CONTROLLER`).

    MultiKueue sends a multi-site Job to the worker whose copy of the Workload is admitted,
    and a worker admits only once every check of its ClusterQueue is Ready: listing this
    check there makes a worker wait for its inputs before it can win
    (`steward.services.campaign.staging_check`).
    """
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "AdmissionCheck",
        "metadata": _meta(STAGING_CHECK, MANAGED_BY),
        "spec": {"controllerName": STAGING_CONTROLLER},
    }


def _quantity(value: str) -> Decimal:
    """A Kubernetes quantity as a number (``250m`` -> 0.25, ``2Gi`` -> 2147483648)."""
    units = {
        "m": Decimal("0.001"),
        "": Decimal(1),
        "k": Decimal(10) ** 3,
        "M": Decimal(10) ** 6,
        "G": Decimal(10) ** 9,
        "T": Decimal(10) ** 12,
        "P": Decimal(10) ** 15,
        "E": Decimal(10) ** 18,
        "Ki": Decimal(2) ** 10,
        "Mi": Decimal(2) ** 20,
        "Gi": Decimal(2) ** 30,
        "Ti": Decimal(2) ** 40,
        "Pi": Decimal(2) ** 50,
        "Ei": Decimal(2) ** 60,
    }
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", value)
    if match is None or match.group(2) not in units:
        raise ValueError(f"invalid quantity {value!r}")
    return Decimal(match.group(1)) * units[match.group(2)]


def _format_quantity(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m"


def render_multisite(
    sites: Sequence[Site], namespace: str, queue: str | None = None
) -> list[dict[str, Any]]:
    """The manager's objects sending a namespace's Jobs to SITES, in preference order.

    One MultiKueueCluster per site (named after the Site, its kubeconfig from the Secret the
    Site names), a MultiKueueConfig listing them in order, the MultiKueue AdmissionCheck, a
    ClusterQueue whose quota is the sum of the sites' queues (Kueue's advice: the manager's
    quota should equal what the workers have), and the namespace's LocalQueue.

    Raises
    ------
    PermanentError
        Fewer than two sites, a site without batch capacity, or without ``kubeconfigSecret``.
    """
    if len(sites) < 2:  # noqa: PLR2004 - multi-site means two or more
        raise PermanentError("a multi-site campaign needs at least two sites")
    names = [site.metadata.name for site in sites]
    name = multisite_name(names)
    labels = _labels(multisite=name)
    objects: list[dict[str, Any]] = []
    totals = dict.fromkeys(_RESOURCES, Decimal(0))
    for site in sites:
        batch = _batch(site)
        if batch.kubeconfig_secret is None:
            msg = (
                f"Site {site.metadata.name} names no spec.batch.kubeconfigSecret: MultiKueue "
                "cannot reach its cluster"
            )
            raise PermanentError(msg)
        chosen = resolve_queue(site, queue).removeprefix(f"{site.metadata.name}-")
        for declared in batch.queues:
            if declared.name == chosen:
                for quota in declared.quotas:
                    for resource in _RESOURCES:
                        totals[resource] += _quantity(getattr(quota, resource))
        objects.append(
            {
                "apiVersion": KUEUE_API_VERSION,
                "kind": "MultiKueueCluster",
                "metadata": _meta(site.metadata.name, _labels(site=site.metadata.name)),
                "spec": {
                    "clusterSource": {
                        "kubeConfig": {
                            "locationType": "Secret",
                            "location": batch.kubeconfig_secret,
                        }
                    }
                },
            }
        )
    objects += [
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "MultiKueueConfig",
            "metadata": _meta(name, labels),
            "spec": {"clusters": names},
        },
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "AdmissionCheck",
            "metadata": _meta(name, labels),
            "spec": {
                "controllerName": MULTIKUEUE_CONTROLLER,
                "parameters": {
                    "apiGroup": "kueue.x-k8s.io",
                    "kind": "MultiKueueConfig",
                    "name": name,
                },
            },
        },
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "ResourceFlavor",
            "metadata": _meta(MULTISITE_FLAVOR, MANAGED_BY),
            "spec": {},
        },
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "ClusterQueue",
            "metadata": _meta(name, labels),
            "spec": {
                "namespaceSelector": {},
                "queueingStrategy": "BestEffortFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": list(_RESOURCES),
                        "flavors": [
                            {
                                "name": MULTISITE_FLAVOR,
                                "resources": [
                                    {"name": r, "nominalQuota": _format_quantity(totals[r])}
                                    for r in _RESOURCES
                                ],
                            }
                        ],
                    }
                ],
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "admissionChecksStrategy": {"admissionChecks": [{"name": name}]},
            },
        },
        {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "LocalQueue",
            "metadata": _meta(name, labels, namespace),
            "spec": {"clusterQueue": name},
        },
    ]
    return objects


def job_labels(queue: str, priority: str) -> dict[str, str]:
    """Labels that hand a Job to Kueue: its LocalQueue and its WorkloadPriorityClass."""
    return {QUEUE_LABEL: queue, PRIORITY_LABEL: priority_class_name(priority)}


@dataclass(frozen=True)
class WorkloadState:
    """Where Kueue has a Job's Workload, read from its status and conditions."""

    name: str
    """The Workload."""

    phase: str
    """Pending, QuotaReserved, Admitted, Evicted, Inactive or Finished."""

    reason: str
    """Kueue's reason for the phase (e.g. ``Pending``: its message says which quota is short;
    ``Evicted``: ``Preempted``, ``InactiveWorkload``...)."""

    message: str
    """Kueue's message."""

    cluster: str | None
    """MultiKueue: the worker cluster that admitted it."""

    nominated: tuple[str, ...]
    """MultiKueue: the worker clusters it is offered to while pending."""

    evictions: int
    """How many times Kueue evicted it (preempted, deactivated, worker lost...)."""


def _condition(workload: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def workload_state(workload: Mapping[str, Any]) -> WorkloadState:
    """Read a Workload into a `WorkloadState`.

    Kueue's preemption shows only here: it suspends the Job, which deletes its pods without a
    DisruptionTarget condition, and records the reason on the Workload's ``Evicted``
    condition (jobset#1117), so a ledger must read the Workload to count the pod as evicted.
    """
    status = workload.get("status") or {}
    spec = workload.get("spec") or {}
    evictions = sum(
        int(entry.get("count", 0))
        for entry in status.get("schedulingStats", {}).get("evictions", [])
    )

    def state(phase: str, condition: Mapping[str, Any] | None) -> WorkloadState:
        return WorkloadState(
            name=str(workload["metadata"]["name"]),
            phase=phase,
            reason=str((condition or {}).get("reason", "")),
            message=str((condition or {}).get("message", "")),
            cluster=status.get("clusterName"),
            nominated=tuple(status.get("nominatedClusterNames") or ()),
            evictions=evictions,
        )

    finished = _condition(workload, "Finished")
    if finished is not None and finished.get("status") == "True":
        return state("Finished", finished)
    if spec.get("active") is False:  # paused: Kueue evicts it with reason InactiveWorkload
        return state("Inactive", _condition(workload, "Evicted"))
    evicted = _condition(workload, "Evicted")
    if evicted is not None and evicted.get("status") == "True":
        return state("Evicted", evicted)
    for phase in ("Admitted", "QuotaReserved"):
        condition = _condition(workload, phase)
        if condition is not None and condition.get("status") == "True":
            return state(phase, condition)
    return state("Pending", _condition(workload, "QuotaReserved"))


@dataclass
class QueueingService:
    """Applies the rendered Kueue objects, prunes stale ones, reads Kueue's state."""

    kueue: KueueStorage
    resources: KubeResources | None = None
    """Steward's resources, to read the local Site for a campaign dispatched here."""

    def reconcile_site(self, site: Site) -> list[QueueStatus]:
        """Make Kueue's flavors, queues and priority classes match the Site; return its queues.

        Objects this Steward rendered for the site earlier and renders no longer (a removed
        queue or pool) are deleted; Kueue keeps a ClusterQueue until its admitted workloads
        finish. A site without batch capacity has all of them removed.

        Raises
        ------
        NotFoundError
            Kueue is not installed in this cluster.
        PermanentError, TransientError
            The API server or Kueue refused an object, or could not be reached.
        """
        name = site.metadata.name
        self.ensure_priority_classes()
        wanted = render_site(site) if site.spec.batch is not None else []
        for body in wanted:
            self.kueue.apply(body)
        self._prune(name, wanted, kinds=("ClusterQueue", "ResourceFlavor"))
        return self.queue_status(site)

    def reconcile_local_site(self, site: Site, local_site: str | None, outcome: Outcome) -> None:
        """Reconcile SITE's Kueue objects when it is this cluster's site; report in OUTCOME.

        Every cluster holds every Site (they come from one git repository), but a site's
        quotas are rendered only in its own cluster: the one whose operator has
        ``STEWARD_SITE`` set to it. Kueue missing or refusing is a Warning Event and leaves
        the Site's Rucio side alone; the next reconcile tries again.
        """
        if local_site != site.metadata.name:
            return
        try:
            queues = self.reconcile_site(site)
        except NotFoundError as error:
            message = f"Kueue is not installed in this cluster ({error}); no queues rendered"
            outcome.events.append(("Warning", "KueueMissing", message))
        except (PermanentError, TransientError) as error:
            outcome.events.append(("Warning", "QueuesNotReconciled", str(error)))
        else:
            outcome.status["queues"] = [
                queue.model_dump(mode="json", by_alias=True) for queue in queues
            ]

    def remove_site(self, site: str) -> None:
        """Delete the flavors and queues rendered for SITE (the Site is being deleted)."""
        self._prune(site, [], kinds=("ClusterQueue", "ResourceFlavor"))

    def ensure_priority_classes(self) -> None:
        """Apply the WorkloadPriorityClasses of the campaign priority levels."""
        for body in render_priority_classes():
            self.kueue.apply(body)

    def _prune(self, site: str, wanted: Iterable[dict[str, Any]], kinds: Iterable[str]) -> None:
        keep = {(body["kind"], body["metadata"]["name"]) for body in wanted}
        for kind in kinds:
            for live in self.kueue.list(kind, label_selector=f"{SITE_LABEL}={site}"):
                if (kind, live["metadata"]["name"]) not in keep:
                    self.kueue.delete(kind, live["metadata"]["name"])

    def queue_status(self, site: Site) -> list[QueueStatus]:
        """Kueue's view of each of the site's queues: active, pending and admitted counts."""
        if site.spec.batch is None:
            return []
        statuses = []
        for queue in site.spec.batch.queues:
            cq_name = cluster_queue_name(site.metadata.name, queue.name)
            live = self.kueue.get("ClusterQueue", cq_name) or {}
            status = live.get("status") or {}
            active = _condition(live, "Active") if live else None
            statuses.append(
                QueueStatus(
                    name=queue.name,
                    cluster_queue=cq_name,
                    active=bool(active and active.get("status") == "True"),
                    pending=int(status.get("pendingWorkloads", 0)),
                    admitted=int(status.get("admittedWorkloads", 0)),
                )
            )
        return statuses

    def ensure_local_queues(self, site: Site, namespace: str) -> list[str]:
        """Give NAMESPACE a LocalQueue for each of SITE's queues; return their names."""
        names = []
        for queue in _batch(site).queues:
            cq_name = cluster_queue_name(site.metadata.name, queue.name)
            self.kueue.apply(local_queue(namespace, cq_name, cq_name, site.metadata.name))
            names.append(cq_name)
        return names

    def ensure_multisite(
        self, sites: Sequence[Site], namespace: str, queue: str | None = None
    ) -> str:
        """Render and apply the manager's objects for SITES; return the LocalQueue's name.

        The WorkloadPriorityClasses too: Kueue makes no Workload for a Job whose priority
        class label names a missing one, and the manager's Site may declare no batch capacity
        of its own (so `reconcile_site` never applied them there).
        """
        self.ensure_priority_classes()
        for body in render_multisite(sites, namespace, queue):
            self.kueue.apply(body)
        return multisite_name([site.metadata.name for site in sites])

    def ensure_dispatched_queue(
        self, local_site: str, sites: Sequence[str], namespace: str, queue: str | None = None
    ) -> str:
        """At LOCAL_SITE, a worker of a multi-site campaign: its LocalQueue (`ensure_worker_queue`).

        Raises
        ------
        PermanentError
            LOCAL_SITE is not a Site here, or declares no batch capacity.
        """
        listed = self.resources.list("Site") if self.resources else []  # list: no get on Sites
        body = next((item for item in listed if item["metadata"]["name"] == local_site), None)
        if body is None:
            msg = f"this operator's Site {local_site!r} does not exist in this cluster"
            raise PermanentError(msg)
        site = Site.model_validate({k: v for k, v in body.items() if k != "status"})
        return self.ensure_worker_queue(site, sites, namespace, queue)

    def ensure_worker_queue(
        self,
        site: Site,
        sites: Sequence[str],
        namespace: str,
        queue: str | None = None,
        *,
        staging: bool = True,
    ) -> str:
        """At worker SITE: the LocalQueue a multi-site campaign's copies are submitted to.

        With STAGING (what the operator does), the site's ClusterQueue also gets the staging
        check (`render_staging_check`), applied by its own field manager so that
        `reconcile_site` re-rendering the queue keeps it. Every Workload of that queue then
        waits for the check, the site's own campaigns' too: the staging check marks a
        Workload without inputs to stage Ready at once. Without it (a worker no Steward
        runs at, as in the local stack) nothing would answer the check, and Kueue would keep
        the queue inactive.

        Raises
        ------
        TransientError
            The site's ClusterQueue is not rendered yet (the Site's reconcile does it).
        """
        body = worker_local_queue(site, sites, namespace, queue)
        cluster_queue = body["spec"]["clusterQueue"]
        if not staging:
            self.kueue.apply(body)
            return str(body["metadata"]["name"])
        if self.kueue.get("ClusterQueue", cluster_queue) is None:
            msg = f"ClusterQueue {cluster_queue} of Site {site.metadata.name} does not exist yet"
            raise TransientError(msg)
        self.kueue.apply(render_staging_check())
        self.kueue.apply(
            {
                "apiVersion": KUEUE_API_VERSION,
                "kind": "ClusterQueue",
                "metadata": {"name": cluster_queue},
                "spec": {"admissionChecksStrategy": {"admissionChecks": [{"name": STAGING_CHECK}]}},
            },
            field_manager=STAGING_FIELD_MANAGER,
        )
        self.kueue.apply(body)
        return str(body["metadata"]["name"])

    def worker_clusters(self, sites: Iterable[str]) -> dict[str, tuple[bool, str]]:
        """Whether MultiKueue reaches each site's cluster, and Kueue's message if not.

        A worker that cannot be reached (its API server down, its credentials refused) has
        its MultiKueueCluster ``Active`` condition False; Kueue keeps work admitted there for
        ``workerLostTimeout`` and then dispatches it again.
        """
        result = {}
        for site in sites:
            live = self.kueue.get("MultiKueueCluster", site)
            active = _condition(live, "Active") if live else None
            if active is None:
                result[site] = (False, "no MultiKueueCluster yet")
            else:
                ok = active.get("status") == "True"
                result[site] = (ok, "" if ok else str(active.get("message", "")))
        return result

    def workloads(self, namespace: str, label_selector: str | None = None) -> list[WorkloadState]:
        """The state of every Workload in NAMESPACE (optionally only the labelled Jobs')."""
        return [
            workload_state(item)
            for item in self.kueue.list(
                "Workload", namespace=namespace, label_selector=label_selector
            )
        ]

    def workloads_by_job(
        self, namespace: str, jobs: set[str]
    ) -> dict[str, tuple[str, WorkloadState, bool]]:
        """The Workload of each of JOBS: job name -> (Workload name, state, whether active)."""
        found = {}
        for item in self.kueue.list("Workload", namespace=namespace):
            owners = [
                ref["name"]
                for ref in item["metadata"].get("ownerReferences") or []
                if ref.get("kind") == "Job"
            ]
            if owners and owners[0] in jobs:
                active = (item.get("spec") or {}).get("active", True) is not False
                found[owners[0]] = (item["metadata"]["name"], workload_state(item), active)
        return found

    def set_active(self, namespace: str, workload: str, *, active: bool) -> None:
        """Deactivate (pause) or reactivate (resume) one Workload.

        A deactivated Workload is evicted: Kueue suspends its Job, which stops the running pods
        and keeps the indexes that completed; reactivated, it queues again for quota.
        """
        self.kueue.patch("Workload", workload, {"spec": {"active": active}}, namespace)
