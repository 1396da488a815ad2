"""Quotas, priority, preemption, fair sharing and pause on the real Kueue, with Indexed Jobs.

Each test renders its own Site's queues (a unique site name, so a unique cohort, flavors and
ClusterQueues) on the Kueue cluster of `support.kueue` and submits plain Indexed Jobs whose
kwok pods run long enough to hold quota.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import kubernetes
import pytest

from steward.services.queueing import QUEUE_LABEL, QueueingService, WorkloadState
from steward.services.site import Outcome
from steward.storage.kueue import KueueStorage
from steward.testing.kueue import batch_site
from support.kueue import Cluster, indexed_job, unique
from support.waiting import until

pytestmark = pytest.mark.kube


def _by_job(cluster: Cluster, namespace: str) -> dict[str, WorkloadState]:
    """Workload state by the name of the Job that owns it."""
    states = {}
    for item in cluster.queueing.kueue.list("Workload", namespace=namespace):
        job = item["metadata"]["ownerReferences"][0]["name"]
        states[job] = next(
            s for s in cluster.queueing.workloads(namespace) if s.name == item["metadata"]["name"]
        )
    return states


def _admitted(cluster: Cluster, namespace: str) -> set[str]:
    return {job for job, s in _by_job(cluster, namespace).items() if s.phase == "Admitted"}


def test_quota_bounds_a_low_campaign_while_an_urgent_one_is_admitted_first(
    kueue_cluster: Cluster, kueue_namespace: str
) -> None:
    site = batch_site(unique("quota", 20), {"prod": {"cpu": "2", "memory": "16Gi"}})
    statuses = kueue_cluster.queueing.reconcile_site(site)
    assert [s.cluster_queue for s in statuses] == [f"{site.metadata.name}-prod"]
    (queue,) = kueue_cluster.queueing.ensure_local_queues(site, kueue_namespace)
    until("the site's queue active", lambda: kueue_cluster.queueing.queue_status(site)[0].active)
    batch = kueue_cluster.batch

    for name in ("low-1", "low-2", "low-3", "low-4"):
        batch.create_namespaced_job(kueue_namespace, indexed_job(name, queue=queue, priority="low"))

    def phases() -> Counter[str]:
        return Counter(s.phase for s in _by_job(kueue_cluster, kueue_namespace).values())

    until("two low Jobs admitted, two waiting", lambda: phases() == {"Admitted": 2, "Pending": 2})
    waiting = [s for s in _by_job(kueue_cluster, kueue_namespace).values() if s.phase == "Pending"]
    assert any("insufficient unused quota" in s.message for s in waiting), waiting

    batch.create_namespaced_job(
        kueue_namespace, indexed_job("urgent", queue=queue, priority="urgent")
    )

    until("the urgent Job admitted", lambda: "urgent" in _admitted(kueue_cluster, kueue_namespace))
    admitted = _admitted(kueue_cluster, kueue_namespace)
    assert len(admitted) == 2  # still within the quota: a low Job made room
    preempted = [s for s in _by_job(kueue_cluster, kueue_namespace).values() if s.evictions]
    assert len(preempted) == 1
    assert preempted[0].phase in {"Evicted", "Pending"}

    def usage() -> tuple[int, int]:
        status = kueue_cluster.queueing.queue_status(site)[0]
        return status.admitted, status.pending

    until(  # Kueue writes the ClusterQueue's counts a moment after the Workloads change
        "the queue counting 2 admitted and 3 pending", lambda: usage() == (2, 3)
    )

    def running() -> set[str]:
        return {
            pod.metadata.labels["job-name"]
            for pod in kueue_cluster.core.list_namespaced_pod(kueue_namespace).items
            if pod.status.phase in {"Pending", "Running"} and not pod.metadata.deletion_timestamp
        }

    until("pods running for exactly the admitted Jobs", lambda: running() == admitted)


def test_queues_of_a_cohort_share_what_they_borrow_fairly(
    kueue_cluster: Cluster, kueue_namespace: str
) -> None:
    site = batch_site(
        unique("fair", 20),
        {
            "a": {"cpu": "2", "memory": "32Gi"},
            "b": {"cpu": "2", "memory": "32Gi"},
            "spare": {"cpu": "4", "memory": "32Gi"},
        },
    )
    kueue_cluster.queueing.reconcile_site(site)
    queues = kueue_cluster.queueing.ensure_local_queues(site, kueue_namespace)
    queue_a, queue_b = queues[0], queues[1]
    batch = kueue_cluster.batch

    for index in range(8):
        batch.create_namespaced_job(kueue_namespace, indexed_job(f"a-{index}", queue=queue_a))
    until(  # its own 2 CPUs, and the idle 4 of spare and 2 of b
        "campaign A borrowing the idle quota of its cohort",
        lambda: len(_admitted(kueue_cluster, kueue_namespace)) == 8,
    )
    for index in range(8):
        batch.create_namespaced_job(kueue_namespace, indexed_job(f"b-{index}", queue=queue_b))

    def shares() -> Counter[str]:
        return Counter(job[0] for job in _admitted(kueue_cluster, kueue_namespace))

    until(
        "A and B holding equal shares", lambda: shares() == Counter({"a": 4, "b": 4}), timeout=120
    )
    jobs = batch.list_namespaced_job(kueue_namespace).items
    assert {job.metadata.labels[QUEUE_LABEL] for job in jobs} == {queue_a, queue_b}


def _completed(value: str | None) -> set[int]:
    """Indexes of a Job's ``status.completedIndexes`` (``1,3-5``)."""
    indexes: set[int] = set()
    for part in (value or "").split(","):
        if part:
            first, _, last = part.partition("-")
            indexes.update(range(int(first), int(last or first) + 1))
    return indexes


@pytest.mark.parametrize("how", ["workload-inactive", "queue-hold-and-drain"])
def test_pause_and_resume_through_kueue_keep_finished_indexes(
    kueue_cluster: Cluster, kueue_namespace: str, how: str
) -> None:
    site = batch_site(unique("pause", 20), {"prod": {"cpu": "4", "memory": "16Gi"}})
    kueue_cluster.queueing.reconcile_site(site)
    (queue,) = kueue_cluster.queueing.ensure_local_queues(site, kueue_namespace)
    batch = kueue_cluster.batch
    job = indexed_job("step", queue=queue, completions=12, parallelism=2, runtime="2s")
    batch.create_namespaced_job(kueue_namespace, job)

    def done() -> set[int]:
        return _completed(
            batch.read_namespaced_job("step", kueue_namespace).status.completed_indexes
        )

    until("some indexes done", lambda: len(done()) >= 3)
    (workload,) = kueue_cluster.queueing.workloads(kueue_namespace)
    if how == "workload-inactive":
        kueue_cluster.queueing.set_active(kueue_namespace, workload.name, active=False)
    else:
        kueue_cluster.queueing.kueue.patch(
            "LocalQueue", queue, {"spec": {"stopPolicy": "HoldAndDrain"}}, kueue_namespace
        )
    until(
        "the Job suspended", lambda: batch.read_namespaced_job("step", kueue_namespace).spec.suspend
    )
    until(
        "its pods gone",
        lambda: (
            not [
                p
                for p in kueue_cluster.core.list_namespaced_pod(kueue_namespace).items
                if p.status.phase in {"Pending", "Running"}
            ]
        ),
    )
    paused_at = datetime.now(UTC)
    finished = done()
    assert finished
    assert len(finished) < 12

    if how == "workload-inactive":
        kueue_cluster.queueing.set_active(kueue_namespace, workload.name, active=True)
    else:
        kueue_cluster.queueing.kueue.patch(
            "LocalQueue", queue, {"spec": {"stopPolicy": "None"}}, kueue_namespace
        )

    until("the Job complete", lambda: len(done()) == 12, timeout=120)
    redone = [
        pod.metadata.name
        for pod in kueue_cluster.core.list_namespaced_pod(kueue_namespace).items
        if int(pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]) in finished
        and pod.metadata.creation_timestamp > paused_at
    ]
    assert redone == []  # no index that had finished ran again
    assert finished <= done()


def test_a_site_is_rendered_only_in_its_own_cluster_and_pruned_when_a_queue_goes(
    kueue_cluster: Cluster,
) -> None:
    site = batch_site(
        unique("own", 20), {"a": {"cpu": "1", "memory": "1Gi"}, "b": {"cpu": "1", "memory": "1Gi"}}
    )
    name = site.metadata.name
    elsewhere = Outcome(status={})
    kueue_cluster.queueing.reconcile_local_site(site, "another-site", elsewhere)
    assert elsewhere.status == {}
    assert kueue_cluster.queueing.kueue.get("ClusterQueue", f"{name}-a") is None

    here = Outcome(status={})
    kueue_cluster.queueing.reconcile_local_site(site, name, here)
    assert [q["clusterQueue"] for q in here.status["queues"]] == [f"{name}-a", f"{name}-b"]

    assert site.spec.batch is not None
    site.spec.batch.queues = site.spec.batch.queues[:1]
    kueue_cluster.queueing.reconcile_local_site(site, name, Outcome(status={}))
    until(
        "queue b deleted",
        lambda: kueue_cluster.queueing.kueue.get("ClusterQueue", f"{name}-b") is None,
    )
    assert kueue_cluster.queueing.kueue.get("ClusterQueue", f"{name}-a") is not None


def test_a_cluster_without_kueue_gets_a_warning_not_a_failed_site(
    kube_api: kubernetes.client.ApiClient,
) -> None:
    site = batch_site(unique("nokueue", 20), {"a": {"cpu": "1", "memory": "1Gi"}})
    outcome = Outcome(status={})

    QueueingService(KueueStorage(kube_api)).reconcile_local_site(site, site.metadata.name, outcome)

    assert "queues" not in outcome.status
    assert [(t, r) for t, r, _ in outcome.events] == [("Warning", "KueueMissing")]
