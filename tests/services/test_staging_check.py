"""The worker's staging check: its decision (pure), and its release and answers (real parts).

`check_state` is tested alone. The service runs against the session's Kueue cluster (a real
API server with Kueue) and the session's real Rucio: the release of a rule whose copy is gone
goes through the deletion gate (a freeze keeps it, a Rucio failure postpones it), and a
Workload of the site's own work (no inputs to stage) is admitted once the check is Active.
The multi-site path end to end (MultiKueue, two workers) is in
tests/e2e/test_multikueue_campaign.py.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from steward.exceptions import NotFoundError, RucioTransientError
from steward.models.replication import RuleState
from steward.models.site import Site
from steward.services.audit import AuditService
from steward.services.campaign.staging_check import (
    OWNER,
    StagingCheckService,
    check_state,
    staging_dataset,
)
from steward.services.ownership import owner_tag
from steward.services.protections import ClusterFacts
from steward.services.queueing import (
    STAGING_ANNOTATION,
    STAGING_CHECK,
    render_staging_check,
)
from steward.storage.audit import AuditFilter
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.kueue import KUEUE_API_VERSION, KueueStorage
from steward.storage.rucio import Rule, RuleSpec
from steward.testing.kueue import batch_site
from support.kueue import Cluster, indexed_job, unique
from support.rucio import Faults
from support.waiting import until

DATASET = "scope:shard-0.inputs.abcdef12"


def _rule(state: RuleState, did: str = DATASET, **extra: Any) -> Rule:
    scope, name = did.split(":")
    return Rule(
        id="r1",
        scope=scope,
        name=name,
        account="steward",
        rse_expression="IN2P3_DISK",
        copies=1,
        state=state,
        **extra,
    )


def test_the_check_is_ready_only_when_the_staging_rule_is_ok() -> None:
    assert check_state(DATASET, "IN2P3_DISK", [_rule(RuleState.OK)])[0] == "Ready"
    for state in (RuleState.REPLICATING, RuleState.STUCK, RuleState.SUSPENDED, RuleState.INJECT):
        got, message = check_state(DATASET, "IN2P3_DISK", [_rule(state, locks_ok=1)])
        assert got == "Pending"
        assert state.value in message
        assert "1 OK" in message


def test_a_check_without_its_rule_is_pending_and_other_rules_do_not_count() -> None:
    other = _rule(RuleState.OK, did="scope:shard-1.inputs.abcdef12")
    state, message = check_state(DATASET, "IN2P3_DISK", [other])
    assert state == "Pending"
    assert "no staging rule" in message


def test_a_stuck_rule_says_what_rucio_says() -> None:
    stuck = _rule(RuleState.STUCK, locks_stuck=2, error="no source replica")
    state, message = check_state(DATASET, "IN2P3_DISK", [stuck])
    assert state == "Pending"
    assert "no source replica" in message
    assert "2 stuck" in message


# -- real API server with Kueue, real Rucio ----------------------------------------------------


@pytest.fixture
def staging_check(kueue_cluster: Cluster) -> Iterator[dict[str, Any]]:
    """The cluster's staging AdmissionCheck, deleted afterwards.

    Kueue holds the deletion while a ClusterQueue lists the check; a test that makes one
    removes it.
    """
    kueue = KueueStorage(kueue_cluster.api)
    # The check is cluster-wide: one an earlier test deleted may still be going (Kueue's
    # finalizer), and applying over it would leave this test with none once it goes.
    until(
        "no staging check of an earlier test still being deleted",
        lambda: (
            "deletionTimestamp"
            not in ((kueue.get("AdmissionCheck", STAGING_CHECK) or {}).get("metadata") or {})
        ),
    )
    yield kueue.apply(render_staging_check())
    kueue.delete("AdmissionCheck", STAGING_CHECK)
    until("the staging check gone", lambda: kueue.get("AdmissionCheck", STAGING_CHECK) is None)


def _service(cluster: Cluster, rucio: Any, database_url: str, **kwargs: Any) -> StagingCheckService:
    engine = make_engine(database_url)
    upgrade(engine)
    return StagingCheckService(
        kueue=KueueStorage(cluster.api),
        rucio=rucio,
        audit=AuditService(make_sessionmaker(engine)),
        cluster_id=f"test-{secrets.token_hex(4)}",
        **kwargs,
    )


def _workload(name: str, namespace: str, dataset: str | None) -> dict[str, Any]:
    """A Workload as MultiKueue copies it to a worker: its pods' template names the inputs."""
    annotations = {STAGING_ANNOTATION: dataset} if dataset else {}
    return {
        "apiVersion": KUEUE_API_VERSION,
        "kind": "Workload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "queueName": "nowhere",
            "podSets": [
                {
                    "name": "main",
                    "count": 1,
                    "template": {
                        "metadata": {"annotations": annotations},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "main",
                                    "image": "busybox",
                                    "resources": {"requests": {"cpu": "1"}},
                                }
                            ],
                        },
                    },
                }
            ],
        },
    }


def test_the_dataset_is_read_from_the_workloads_pod_template() -> None:
    assert staging_dataset(_workload("w", "ns", DATASET)) == DATASET
    assert staging_dataset(_workload("w", "ns", None)) is None
    assert staging_dataset({"metadata": {"name": "w"}}) is None


def _expires_within_a_day(rule: Rule) -> bool:
    horizon = datetime.now(UTC) + timedelta(days=1, minutes=5)
    return rule.expires_at is not None and rule.expires_at <= horizon


@pytest.mark.kube
@pytest.mark.rucio
def test_the_rule_of_a_gone_copy_is_released_through_the_gate_and_a_live_one_is_kept(
    kueue_cluster: Cluster,
    kueue_namespace: str,
    staging_check: dict[str, Any],
    rucio_storage: Any,
    rucio_data: Any,
    database_url: str,
) -> None:
    failing = Faults(rucio_storage)
    service = _service(
        kueue_cluster, failing, database_url, facts=ClusterFacts(freeze="restore in progress")
    )
    tag = owner_tag(service.cluster_id, OWNER)
    gone, live = (rucio_data.dataset(rse="IN2P3_DISK") for _ in range(2))
    spec = RuleSpec(rse_expression="IN2P3_DISK", comment=tag)
    gone_rule, live_rule = (rucio_storage.add_rule(did, spec) for did in (gone, live))
    # The copy of the Workload that staged LIVE is still here.
    KueueStorage(kueue_cluster.api).apply(_workload(unique("copy"), kueue_namespace, live))
    site = batch_site(unique("in2p3", 20), {"prod": {"cpu": "1", "memory": "1Gi"}})

    # Frozen: the gate keeps the gone copy's rule, and says why.
    done = service.reconcile(site)
    assert "restore in progress" in done.kept
    assert not _expires_within_a_day(rucio_storage.get_rule(gone_rule))
    active = KueueStorage(kueue_cluster.api).get("AdmissionCheck", STAGING_CHECK) or {}
    [condition] = active["status"]["conditions"]
    assert (condition["type"], condition["status"]) == ("Active", "True")

    # Rucio refuses the update: the pass fails, nothing expires, the next pass tries again.
    service.facts = ClusterFacts()
    failing.fail("update_rule")
    with pytest.raises(RucioTransientError):
        service.reconcile(site)
    assert not _expires_within_a_day(rucio_storage.get_rule(gone_rule))

    failing.heal()
    done = service.reconcile(site)
    assert done.released == [gone_rule]
    assert _expires_within_a_day(rucio_storage.get_rule(gone_rule))
    assert not _expires_within_a_day(rucio_storage.get_rule(live_rule))  # its copy is here
    actions = [
        entry.action
        for entry in service.audit.query(AuditFilter(kind="AdmissionCheck", name=STAGING_CHECK))
    ]
    assert actions.count("deletion.intent") == 2  # the failed batch, then the released one
    assert "release-staging" in actions
    assert service.reconcile(site).released == []  # expiring already: not released twice


@pytest.mark.kube
@pytest.mark.rucio
def test_a_check_created_again_still_releases_the_rules_staged_under_the_first(
    kueue_cluster: Cluster,
    staging_check: dict[str, Any],
    rucio_storage: Any,
    rucio_data: Any,
    database_url: str,
) -> None:
    """Steward creates its check again when it is deleted; no staging rule is orphaned.

    The rules are tagged by the check's name at this cluster, not by its UID, which the new
    check does not share.
    """
    service = _service(kueue_cluster, rucio_storage, database_url)
    staged = rucio_data.dataset(rse="IN2P3_DISK")
    spec = RuleSpec(rse_expression="IN2P3_DISK", comment=owner_tag(service.cluster_id, OWNER))
    rule = rucio_storage.add_rule(staged, spec)
    kueue = KueueStorage(kueue_cluster.api)
    kueue.delete("AdmissionCheck", STAGING_CHECK)
    until("the first check gone", lambda: kueue.get("AdmissionCheck", STAGING_CHECK) is None)
    again = kueue.apply(render_staging_check())
    assert again["metadata"]["uid"] != staging_check["metadata"]["uid"]
    site = batch_site(unique("in2p3", 20), {"prod": {"cpu": "1", "memory": "1Gi"}})

    assert service.reconcile(site).released == [rule]  # no copy here names the dataset
    assert _expires_within_a_day(rucio_storage.get_rule(rule))


def _worker_site(cluster: Cluster, namespace: str) -> tuple[Site, str]:
    """A worker Site with its queues rendered and the staging check listed; its LocalQueue.

    The caller removes the site (`QueueingService.remove_site`).
    """
    site = batch_site(unique("worker", 20), {"prod": {"cpu": "2", "memory": "4Gi"}})
    cluster.queueing.reconcile_site(site)
    local = cluster.queueing.ensure_worker_queue(site, [site.metadata.name, "elsewhere"], namespace)
    return site, local


@pytest.mark.kube
@pytest.mark.rucio
def test_the_sites_own_work_is_admitted_once_the_check_is_active(
    kueue_cluster: Cluster,
    kueue_namespace: str,
    staging_check: dict[str, Any],
    rucio_storage: Any,
    database_url: str,
) -> None:
    """A Job with no inputs to stage (not a multi-site copy) passes the check at once."""
    site, local = _worker_site(kueue_cluster, kueue_namespace)
    queueing = kueue_cluster.queueing
    queue = f"{site.metadata.name}-prod"
    cluster_queue = KueueStorage(kueue_cluster.api).get("ClusterQueue", queue) or {}
    assert cluster_queue["spec"]["admissionChecksStrategy"] == {
        "admissionChecks": [{"name": STAGING_CHECK}]
    }
    queueing.reconcile_site(site)  # the site's own rendering keeps the check
    cluster_queue = KueueStorage(kueue_cluster.api).get("ClusterQueue", queue) or {}
    assert cluster_queue["spec"]["admissionChecksStrategy"]["admissionChecks"]
    service = _service(kueue_cluster, rucio_storage, database_url)
    job = indexed_job(unique("own"), queue=local, runtime="1s")
    kueue_cluster.batch.create_namespaced_job(kueue_namespace, job)

    def admitted() -> bool:
        service.reconcile(site)
        return any(w.phase in {"Admitted", "Finished"} for w in queueing.workloads(kueue_namespace))

    try:
        until("the Job admitted through the staging check", admitted, timeout=90)
        [workload] = KueueStorage(kueue_cluster.api).list("Workload", namespace=kueue_namespace)
        [check] = workload["status"]["admissionChecks"]
        assert (check["name"], check["state"], check["message"]) == (
            STAGING_CHECK,
            "Ready",
            "no inputs to stage",
        )
    finally:
        kueue_cluster.batch.delete_namespaced_job(
            job["metadata"]["name"], kueue_namespace, propagation_policy="Background"
        )
        queueing.remove_site(site.metadata.name)


class _GoneAfterListing(KueueStorage):
    """Kueue as a worker sees it when MultiKueue deletes its copies just after a listing.

    The first listing of Workloads is returned as it was, after the Job and its Workload
    are gone from the API server (Job deleted, Workload's finalizers dropped and deleted).
    The garbage collector and Kueue may remove the Workload first, at any of those steps.
    """

    def __init__(self, cluster: Cluster, namespace: str, job: str) -> None:
        super().__init__(cluster.api)
        self.cluster, self.namespace, self.job = cluster, namespace, job
        self.lists = 0

    def list(self, kind: str, **kwargs: Any) -> list[dict[str, Any]]:
        listed = super().list(kind, **kwargs)
        if kind != "Workload" or self.lists:
            return listed
        self.lists += 1
        self.cluster.batch.delete_namespaced_job(
            self.job, self.namespace, propagation_policy="Background"
        )
        for workload in super().list("Workload", namespace=self.namespace):
            name = workload["metadata"]["name"]
            with contextlib.suppress(NotFoundError):
                self.patch("Workload", name, {"metadata": {"finalizers": None}}, self.namespace)
                self.delete("Workload", name, self.namespace)
            until(f"{name} gone", lambda n=name: self.get("Workload", n, self.namespace) is None)
        return listed


@pytest.mark.kube
@pytest.mark.rucio
def test_a_workload_deleted_after_the_listing_is_skipped_and_the_pass_goes_on(
    kueue_cluster: Cluster,
    kueue_namespace: str,
    staging_check: dict[str, Any],
    rucio_storage: Any,
    database_url: str,
) -> None:
    """MultiKueue deletes a worker's copy at any time: its check's write finds no Workload.

    That is no error (it failed the pass, so later Workloads and the release waited); the
    copy is reported gone and the next pass lists without it.
    """
    site, local = _worker_site(kueue_cluster, kueue_namespace)
    queueing = kueue_cluster.queueing
    kueue = KueueStorage(kueue_cluster.api)

    def waiting_for_the_check() -> str | None:
        for workload in kueue.list("Workload", namespace=kueue_namespace):
            status = workload.get("status") or {}
            [check] = status.get("admissionChecks") or [{}]
            reserved = any(
                c["type"] == "QuotaReserved" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            if reserved and check.get("state") == "Pending":
                return f"{kueue_namespace}/{workload['metadata']['name']}"
        return None

    try:
        # The check Active before the Job exists: this pass must not answer its Workload.
        _service(kueue_cluster, rucio_storage, database_url).reconcile(site)
        job = indexed_job(unique("copy"), queue=local, runtime="1s")
        kueue_cluster.batch.create_namespaced_job(kueue_namespace, job)
        key = until("quota reserved, the staging check Pending", waiting_for_the_check, timeout=90)
        gone = _GoneAfterListing(kueue_cluster, kueue_namespace, job["metadata"]["name"])
        service = _service(kueue_cluster, rucio_storage, database_url)
        service.kueue = gone

        done = service.reconcile(site)
        assert gone.lists == 1
        assert (done.gone, done.ready, done.pending) == ([key], [], {})
        assert service.reconcile(site).gone == []  # listed without it
    finally:
        queueing.remove_site(site.metadata.name)
