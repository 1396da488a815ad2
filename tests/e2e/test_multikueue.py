"""Multi-site dispatch through MultiKueue: a manager control plane and two worker sites.

Each site is a control plane of its own with its own kwok nodes and Kueue; the manager reaches
them with their kubeconfigs, as MultiKueue does between real clusters. The manager renders the
campaign namespace's multi-site queue (`QueueingService.ensure_multisite`), each worker the
site's queues and the LocalQueue its copies of the Jobs land in (what each site's own Steward
does), and plain Indexed Jobs stand for a campaign's shards.

Kueue's Incremental dispatcher offers a Job to the first site in the order and adds the next
one after a round of five minutes (a constant of Kueue), so the spill-over test waits that
round out once. The lost-worker test waits longer: Kueue took about five minutes to evict the
work admitted at the lost site (well past ``workerLostTimeout``, while its connection retries
back off), and then offers it to the lost site first again, for another round.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from steward.models.site import Site
from steward.services.queueing import WorkloadState, multisite_name
from steward.testing.k8sbuild import Binaries, KueueBuild
from steward.testing.kueue import ALL_AT_ONCE_DISPATCHER, KueueSettings, batch_site
from support.kueue import Sites, indexed_job, start_sites
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.long]

NAMESPACE = "drp"
ORDER = ["ncsa", "in2p3"]
ROUND = 330.0
"""Kueue's Incremental dispatch round (300 s) and the time to act on it."""


def _sites(quotas: dict[str, str]) -> dict[str, Site]:
    return {
        name: batch_site(
            name, {"prod": {"cpu": cpu, "memory": "64Gi"}}, kubeconfig_secret=f"{name}-kubeconfig"
        )
        for name, cpu in quotas.items()
    }


def _connect(sites: Sites, declared: dict[str, Site]) -> str:
    """Render every site's queues as each cluster's Steward would; return the queue name."""
    for name, worker in sites.workers.items():
        worker.namespace(NAMESPACE)
        worker.queueing.reconcile_site(declared[name])
        worker.queueing.ensure_worker_queue(  # no Steward answers a staging check here
            declared[name], ORDER, NAMESPACE, staging=False
        )
    sites.manager.namespace(NAMESPACE)
    sites.manager.queueing.ensure_priority_classes()
    queue = sites.manager.queueing.ensure_multisite([declared[n] for n in ORDER], NAMESPACE)
    until(
        "every worker connected to the manager",
        lambda: all(active for active, _ in sites.manager.queueing.worker_clusters(ORDER).values()),
    )
    return queue


def _where(sites: Sites) -> dict[str, WorkloadState]:
    """The manager's Workloads by the name of their Job."""
    states = {state.name: state for state in sites.manager.queueing.workloads(NAMESPACE)}
    return {
        item["metadata"]["ownerReferences"][0]["name"]: states[item["metadata"]["name"]]
        for item in sites.manager.queueing.kueue.list("Workload", namespace=NAMESPACE)
        if item["metadata"].get("ownerReferences") and item["metadata"]["name"] in states
    }


def _on(sites: Sites, job: str, cluster: str, phase: str | None = None) -> bool:
    """Whether ``job``'s Workload exists and runs on ``cluster`` (in ``phase``, if given).

    Kueue creates the Workload a moment after the Job: until then the answer is no.
    """
    state = _where(sites).get(job)
    return state is not None and state.cluster == cluster and phase in (None, state.phase)


def _succeeded(sites: Sites, job: str) -> bool:
    return (sites.manager.batch.read_namespaced_job(job, NAMESPACE).status.succeeded or 0) == 1


@pytest.fixture(scope="module")
def sites(
    kube_binaries: Binaries, kueue_build: KueueBuild, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sites]:
    """A manager and the NCSA and IN2P3 worker sites."""
    with ExitStack() as stack:
        yield start_sites(
            stack,
            kube_binaries,
            kueue_build,
            tmp_path_factory.mktemp("multikueue"),
            ORDER,
            KueueSettings(),
        )


@pytest.mark.timeout(900)
def test_a_two_site_campaign_fills_the_preferred_site_then_spills_to_the_next(
    sites: Sites,
) -> None:
    queue = _connect(sites, _sites({"ncsa": "2", "in2p3": "4"}))
    assert queue == multisite_name(ORDER)
    batch = sites.manager.batch
    for name in ("shard-0", "shard-1"):
        batch.create_namespaced_job(
            NAMESPACE, indexed_job(name, queue=queue, runtime=f"{ROUND:.0f}s")
        )
    until(
        "the first shards running at NCSA, the preferred site",
        lambda: (
            {job: s.cluster for job, s in _where(sites).items() if s.phase == "Admitted"}
            == {"shard-0": "ncsa", "shard-1": "ncsa"}
        ),
    )

    for name in ("shard-2", "shard-3"):
        batch.create_namespaced_job(NAMESPACE, indexed_job(name, queue=queue, runtime="3s"))
    until(
        "the next shards offered to NCSA only, which has no room",
        lambda: all(
            (state := _where(sites).get(job)) is not None and state.nominated == ("ncsa",)
            for job in ("shard-2", "shard-3")
        ),
    )

    until(
        "NCSA full: the next shards spilled to IN2P3 and finished there",
        lambda: all(_succeeded(sites, job) for job in ("shard-2", "shard-3")),
        timeout=ROUND + 120,
    )
    until(
        "the first shards finished at NCSA",
        lambda: all(_succeeded(sites, job) for job in ("shard-0", "shard-1")),
        timeout=ROUND,
    )
    until(  # the manager marks a Workload Finished a moment after its Job succeeded
        "every Workload finished",
        lambda: all(state.phase == "Finished" for state in _where(sites).values()),
    )
    ran = {job: state.cluster for job, state in _where(sites).items()}
    assert ran == {"shard-0": "ncsa", "shard-1": "ncsa", "shard-2": "in2p3", "shard-3": "in2p3"}


# Three clusters of its own: 199 s in a CI run, 670 s in one that shared the machine.
@pytest.mark.timeout(1200)
def test_a_lost_worker_is_reported_and_its_work_dispatched_again(
    kube_binaries: Binaries, kueue_build: KueueBuild, tmp_path: Path
) -> None:
    """Kueue evicts the work of a worker it lost and dispatches it to another.

    With the All-at-once dispatcher: the Incremental one would first offer the work again to
    the lost worker, first in order, and move on only after its five-minute round (hard-coded
    in Kueue), which says nothing more about Steward. The spill test covers Incremental.
    """
    with ExitStack() as stack:
        sites = start_sites(
            stack,
            kube_binaries,
            kueue_build,
            tmp_path,
            ORDER,
            KueueSettings(worker_lost_timeout_seconds=20, dispatcher=ALL_AT_ONCE_DISPATCHER),
        )
        queue = _connect(sites, _sites({"ncsa": "4", "in2p3": "4"}))
        sites.manager.batch.create_namespaced_job(
            NAMESPACE, indexed_job("shard-0", queue=queue, runtime="1h")
        )
        lost = until(
            "the shard running at a site",
            lambda: next((site for site in ORDER if _on(sites, "shard-0", site, "Admitted")), None),
        )
        (other,) = set(ORDER) - {lost}

        sites.workers[lost].kueue.stop()
        sites.workers[lost].plane.stop()

        until(
            f"{lost} reported unreachable",
            lambda: not sites.manager.queueing.worker_clusters(ORDER)[lost][0],
        )
        until(
            f"the shard dispatched again, to {other}",
            lambda: _on(sites, "shard-0", other, "Admitted"),
            timeout=ROUND,
        )
        assert _where(sites)["shard-0"].evictions >= 1
        assert sites.workers[other].batch.read_namespaced_job("shard-0", NAMESPACE)
