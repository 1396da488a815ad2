"""Campaigns on the real Kueue: admitted through their Site's queue, paused and preempted by it.

The campaign service (one pass per call, as in test_campaign.py) runs against the Kueue
cluster of `support.kueue` and the session's real Rucio. Each test declares its own Site with
batch capacity (a unique name: its flavors and ClusterQueues are its own).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from steward.services.audit import AuditService
from steward.services.campaign import CampaignService
from steward.services.ledger import LedgerService
from steward.services.queueing import PRIORITY_LABEL, QUEUE_LABEL, QueueingService
from steward.storage.batch import BatchStorage
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.kubernetes import KubeResources
from steward.storage.kueue import KueueStorage
from steward.storage.ledger import LedgerStore
from steward.testing.kueue import batch_site
from support.campaigns import CampaignHarness, active_per_invocation, campaign_body
from support.kueue import Cluster, unique
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]


@pytest.fixture
def kueue_campaigns(
    kueue_cluster: Cluster, kueue_namespace: str, rucio_storage: Any, database_url: str
) -> Iterator[CampaignHarness]:
    """The campaign service with Kueue, on the Kueue cluster."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    batch = BatchStorage(kueue_cluster.api)
    resources = KubeResources(kueue_cluster.api)
    service = CampaignService(
        batch=batch,
        resources=resources,
        rucio=rucio_storage,
        sessions=sessions,
        audit=AuditService(sessions),
        cluster_id=f"test-{secrets.token_hex(4)}",
        actor="test",
        queueing=QueueingService(KueueStorage(kueue_cluster.api), resources),
    )
    yield CampaignHarness(service, LedgerService(sessions), kueue_cluster.api, kueue_namespace)
    batch.close()
    engine.dispose()


def _site(cluster: Cluster, cpu: str) -> str:
    """Declare a Site with one queue of CPU cores, apply it and its Kueue objects."""
    site = batch_site(unique("camp", 20), {"prod": {"cpu": cpu, "memory": "64Gi"}})
    kubernetes.client.CustomObjectsApi(cluster.api).create_cluster_custom_object(
        "steward.lsst.io",
        "v1alpha1",
        "sites",
        site.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    cluster.queueing.reconcile_site(site)
    return site.metadata.name


def _ledger(harness: CampaignHarness, uid: str) -> list[Any]:
    """Every recorded attempt of the campaign."""
    with harness.service.sessions() as session:
        return list(LedgerStore(session).attempts(uid))


def test_a_campaign_on_kueue_is_admitted_paused_and_resumed_through_its_queue(
    kueue_campaigns: CampaignHarness, kueue_cluster: Cluster, rucio_data: Any
) -> None:
    site = _site(kueue_cluster, "4")
    steps = [
        {
            "name": "one",
            "parallelism": 4,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podAnnotations": {"kwok.steward.lsst.io/runtime": "3s"},
        }
    ]
    body = campaign_body(
        "queued",
        kueue_campaigns.namespace,
        invocations=16,
        steps=steps,
        scope=rucio_data.scope,
        site=site,
    )
    driven = kueue_campaigns.start(body)

    status = driven.until("some invocations done", lambda s: s["steps"][0]["succeeded"] >= 4)
    assert status["queueing"]["queue"] == f"{site}-prod"
    (job,) = kueue_campaigns.jobs(driven.uid)
    assert job.metadata.labels[QUEUE_LABEL] == f"{site}-prod"
    assert job.metadata.labels[PRIORITY_LABEL] == "steward-campaign-normal"

    driven.patch_spec({"desiredState": "Paused"})
    driven.until(
        "every pod stopped",
        lambda s: (
            s["phase"] == "Paused" and not active_per_invocation(kueue_campaigns.pods(driven.uid))
        ),
    )
    states = kueue_cluster.queueing.workloads(kueue_campaigns.namespace)
    assert [s.phase for s in states] == ["Inactive"]  # paused through Kueue, not by suspend
    finished = {a.index for a in _ledger(kueue_campaigns, driven.uid) if a.klass == "Succeeded"}

    driven.patch_spec({"desiredState": "Running"})
    status = driven.until("the campaign done", lambda s: s["phase"] == "Succeeded", timeout=240)
    attempts = _ledger(kueue_campaigns, driven.uid)
    for index in finished:  # nothing that had finished ran again
        assert [a.klass for a in attempts if a.index == index] == ["Succeeded"]
    assert sum(a.klass == "Succeeded" for a in attempts) == 16
    assert status["queueing"]["admitted"] == 1


def test_kueue_preemption_of_a_low_campaign_is_counted_as_evicted(
    kueue_campaigns: CampaignHarness, kueue_cluster: Cluster, rucio_data: Any
) -> None:
    site = _site(kueue_cluster, "2")
    slow = {"kwok.steward.lsst.io/runtime": "20s"}
    steps = [
        {
            "name": "one",
            "parallelism": 2,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podAnnotations": slow,
        }
    ]
    low = kueue_campaigns.start(
        campaign_body(
            "low",
            kueue_campaigns.namespace,
            invocations=2,
            steps=steps,
            scope=rucio_data.scope,
            site=site,
            priority="low",
        )
    )
    low.until(
        "the low campaign running",
        lambda s: s["queueing"]["admitted"] == 1 and s["steps"][0]["running"] == 2,
    )

    urgent = kueue_campaigns.start(
        campaign_body(
            "urgent",
            kueue_campaigns.namespace,
            invocations=2,
            steps=steps,
            scope=rucio_data.scope,
            site=site,
            priority="urgent",
        )
    )
    urgent.until("the urgent campaign admitted", lambda s: s["queueing"]["admitted"] == 1)
    status = low.until(
        "the low campaign evicted by Kueue", lambda s: s["queueing"]["evictions"] >= 1
    )
    assert status["queueing"]["pending"] == 1

    urgent.until("the urgent campaign done", lambda s: s["phase"] == "Succeeded", timeout=180)
    status = low.until("the low campaign done", lambda s: s["phase"] == "Succeeded", timeout=240)
    attempts = _ledger(kueue_campaigns, low.uid)
    evicted = [a for a in attempts if a.klass == "Evicted"]
    assert evicted  # the preempted pods, recorded as evictions ...
    assert all(not a.counted for a in evicted)  # ... never charged to the retries
    assert status["failures"].get("ExitCode 143") is None
    assert until(
        "the ledger complete",
        lambda: sum(a.klass == "Succeeded" for a in _ledger(kueue_campaigns, low.uid)) == 2,
    )


def test_without_kueue_a_campaign_runs_its_jobs_unqueued_and_says_so(
    campaign_harness: CampaignHarness,
    kube_api: kubernetes.client.ApiClient,
    rucio_data: Any,
) -> None:
    site = batch_site(unique("nokueue", 20), {"prod": {"cpu": "4", "memory": "64Gi"}})
    kubernetes.client.CustomObjectsApi(kube_api).create_cluster_custom_object(
        "steward.lsst.io",
        "v1alpha1",
        "sites",
        site.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    campaign_harness.service.queueing = QueueingService(
        KueueStorage(kube_api), KubeResources(kube_api)
    )
    steps = [{"name": "one", "parallelism": 2}]
    driven = campaign_harness.start(
        campaign_body(
            "unqueued",
            campaign_harness.namespace,
            invocations=2,
            steps=steps,
            scope=rucio_data.scope,
            site=site.metadata.name,
        )
    )

    status = driven.until("the campaign done", lambda s: s["phase"] == "Succeeded")

    assert "queueing" not in status
    assert ("Warning", "KueueMissing") in {(t, r) for t, r, _ in driven.events}
    (job,) = campaign_harness.jobs(driven.uid)
    assert QUEUE_LABEL not in job.metadata.labels
