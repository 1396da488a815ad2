"""A multi-site Campaign: applied at a manager, dispatched by MultiKueue, recorded where it ran.

The manager control plane (no nodes) holds the Campaign and the Sites; the campaign service
reconciles it there, one pass per call, with the session's Rucio, as Steward's operator at the
manager would. NCSA and IN2P3 are control planes of their own with kwok nodes and Kueue, each
set up as its own Steward would (the site's queues, the campaign namespace's LocalQueue, the
campaign PriorityClasses its deployment ships). MultiKueue runs the campaign's Jobs there; the
ledger records each pod from the worker that ran it, through the kubeconfig Secret the Site
names. That kubeconfig holds nothing but a token of the account each worker's rendered
manifests give its manager (``multiKueue.managerServiceAccount``), so every call MultiKueue
and Steward make at a worker passes the rendered ClusterRole or fails the test.

Each worker's ClusterQueue lists Steward's staging AdmissionCheck; each worker's Steward
answers it (`StagingCheckService`, run here on a background thread per worker, as the
operator's timer does, with the worker's own audit database and cluster identity).

Kueue's All-at-once dispatcher: the Incremental one's five-minute round is what
tests/e2e/test_multikueue.py waits out; here it would only slow the campaign down.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from steward.cli.render import load_site
from steward.handlers.rbac import kopf_rules
from steward.models.campaign import Priority
from steward.models.site import Site
from steward.services.audit import AuditService
from steward.services.campaign import CampaignService
from steward.services.campaign.staging_check import CheckPass, StagingCheckService
from steward.services.ledger import LedgerService
from steward.services.queueing import (
    STAGING_ANNOTATION,
    STAGING_CHECK,
    QueueingService,
    multisite_name,
)
from steward.services.render import load_values, render
from steward.storage.audit import AuditFilter
from steward.storage.batch import LABEL_CAMPAIGN_UID, LABEL_RECORDED, BatchStorage
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.kubernetes import KubeResources
from steward.storage.kueue import KueueStorage
from steward.storage.ledger import LedgerStore
from steward.storage.rucio import Rule, RuleState
from steward.storage.workers import WorkerBatches
from steward.testing.childprocess import free_port
from steward.testing.k8sbuild import Binaries, KueueBuild
from steward.testing.kueue import ALL_AT_ONCE_DISPATCHER, KueueSettings, batch_site
from support.campaigns import CampaignHarness, Driven, campaign_body
from support.kueue import CRDS_DIR, Cluster, Sites, start_sites
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio, pytest.mark.long]

NAMESPACE = "drp"
ORDER = ["ncsa", "in2p3"]
MANAGER_SITE = "usdf"
ROOT = Path(__file__).resolve().parents[2]


def _reach_as_the_rendered_account(manager: Cluster, name: str, worker: Cluster) -> None:
    """Have the manager reach WORKER only as the account NAME's rendered manifests give it.

    The worker gets `steward render --site NAME`'s ServiceAccount for its manager, the
    ClusterRole ``steward-multikueue-worker`` and its binding; the manager's Secret
    ``<name>-kubeconfig`` (what MultiKueue and Steward both read) then holds a token the
    worker's API server minted for that account (TokenRequest), and nothing else.
    """
    values = load_values(ROOT / "deploy" / "values.yaml", ROOT / "deploy" / f"values-{name}.yaml")
    account = values.multi_kueue.manager_service_account
    assert account is not None, f"deploy/values-{name}.yaml: no multiKueue.managerServiceAccount"
    where = values.multi_kueue.namespace
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    collections = {
        ("ServiceAccount", account): f"/api/v1/namespaces/{where}/serviceaccounts",
        ("ClusterRole", "steward-multikueue-worker"): f"{rbac}/clusterroles",
        ("ClusterRoleBinding", "steward-multikueue-worker"): f"{rbac}/clusterrolebindings",
    }
    rendered = render(load_site(ROOT / "sites", name), values, kopf_rules())
    applied = 0
    for document in rendered.values():
        collection = collections.get((document["kind"], document["metadata"]["name"]))
        if collection is not None:
            worker.plane.apply(collection, document)
            applied += 1
    assert applied == len(collections)
    kubeconfig = worker.plane.service_account_kubeconfig(where, account, expiration_seconds=7200)
    manager.plane.apply(
        f"/api/v1/namespaces/{where}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-kubeconfig", "namespace": where},
            "data": {"kubeconfig": base64.b64encode(kubeconfig.read_bytes()).decode()},
        },
    )


def _create_site(api: kubernetes.client.ApiClient, site: Site) -> None:
    kubernetes.client.CustomObjectsApi(api).create_cluster_custom_object(
        "steward.lsst.io",
        "v1alpha1",
        "sites",
        site.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _declared(name: str) -> Site:
    """A worker's Site: one queue of two cores, its DISK RSE ``<NAME>_DISK``."""
    return batch_site(
        name, {"prod": {"cpu": "2", "memory": "64Gi"}}, kubeconfig_secret=f"{name}-kubeconfig"
    )


@dataclass
class WorkerSteward:
    """A worker site's Steward answering its staging check, one pass every half second."""

    site: Site
    service: StagingCheckService
    running: threading.Event = field(default_factory=threading.Event)
    """Cleared: the Steward is down (its check keeps whatever state it had)."""
    passes: list[CheckPass] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)
    """Set once a stopped Steward finished its last pass."""

    def loop(self) -> None:
        while not self.stop.wait(0.5):
            if not self.running.is_set():
                self.idle.set()
                continue
            self.idle.clear()
            try:
                self.passes.append(self.service.reconcile(self.site))
            except Exception as error:  # noqa: BLE001 - kept for the test to show
                self.errors.append(repr(error))


def _worker_steward(
    stack: ExitStack, worker: Any, site: Site, rucio: Any, db: Path
) -> WorkerSteward:
    """The worker's Steward: its own audit database and cluster identity, this site's Rucio."""
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    stack.callback(engine.dispose)
    sessions = make_sessionmaker(engine)
    steward = WorkerSteward(
        site,
        StagingCheckService(
            kueue=KueueStorage(worker.api),
            rucio=rucio,
            audit=AuditService(sessions),
            cluster_id=f"{site.metadata.name}-{secrets.token_hex(4)}",
            actor=f"steward-{site.metadata.name}",
        ),
    )
    steward.running.set()
    thread = threading.Thread(target=steward.loop, name=f"staging-{site.metadata.name}")
    thread.start()
    stack.callback(thread.join)
    stack.callback(steward.stop.set)
    return steward


@pytest.fixture(scope="module")
def sites(
    kube_binaries: Binaries,
    kueue_build: KueueBuild,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sites]:
    """A manager holding the Sites, and NCSA and IN2P3 set up as their own Steward does."""
    with ExitStack() as stack:
        started = start_sites(
            stack,
            kube_binaries,
            kueue_build,
            tmp_path_factory.mktemp("multikueue-campaign"),
            ORDER,
            KueueSettings(dispatcher=ALL_AT_ONCE_DISPATCHER),
        )
        started.manager.plane.install_crds(CRDS_DIR)
        started.manager.namespace(NAMESPACE)
        declared = {name: _declared(name) for name in ORDER}
        for site in [
            *declared.values(),
            batch_site(MANAGER_SITE, {"prod": {"cpu": "1", "memory": "1Gi"}}),
        ]:
            _create_site(started.manager.api, site)
        for name, worker in started.workers.items():
            _reach_as_the_rendered_account(started.manager, name, worker)
            worker.namespace(NAMESPACE)
            worker.queueing.reconcile_site(declared[name])
            worker.queueing.ensure_worker_queue(declared[name], ORDER, NAMESPACE)
            shipped = BatchStorage(worker.api)
            shipped.ensure_priority_classes({p.name.lower(): p.value for p in Priority})
            shipped.close()
        yield started


@pytest.fixture(scope="module")
def stewards(
    sites: Sites,
    rucio_storage: Any,
    rucio_sites: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, WorkerSteward]]:
    """Each worker's Steward answering its staging check; its queue is active once it does."""
    run = tmp_path_factory.mktemp("worker-stewards")
    with ExitStack() as stack:
        started = {
            name: _worker_steward(stack, worker, _declared(name), rucio_storage, run / f"{name}.db")
            for name, worker in sites.workers.items()
        }
        for name, worker in sites.workers.items():  # Kueue activates it once the check is
            until(
                f"{name}'s ClusterQueue active with the staging check",
                lambda worker=worker, name=name: (
                    worker.queueing.queue_status(_declared(name))[0].active
                ),
            )
        yield started
        for name, steward in started.items():
            assert not steward.errors, f"{name}'s staging check failed: {steward.errors}"


@pytest.fixture
def manager_campaigns(
    sites: Sites, stewards: dict[str, WorkerSteward], rucio_storage: Any, database_url: str
) -> Iterator[CampaignHarness]:
    """The campaign service at the manager, reading pods at the workers through the Secrets."""
    harness, close = _service(sites, rucio_storage, database_url)
    yield harness
    close()


def _service(sites: Sites, rucio: Any, database_url: str) -> tuple[CampaignHarness, Any]:
    """A campaign service at the manager (what an operator process builds at start)."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    api = sites.manager.api
    batch = BatchStorage(api)
    workers = WorkerBatches(api)
    resources = KubeResources(api)
    service = CampaignService(
        batch=batch,
        resources=resources,
        rucio=rucio,
        sessions=sessions,
        audit=AuditService(sessions),
        cluster_id=f"test-{secrets.token_hex(4)}",
        actor="test",
        queueing=QueueingService(KueueStorage(api), resources),
        worker_batches=workers,
    )

    def close() -> None:
        workers.close()
        batch.close()
        engine.dispose()

    return CampaignHarness(service, LedgerService(sessions), api, NAMESPACE), close


def _body(name: str, scope: str, *, runtime: str) -> dict[str, Any]:
    """Four invocations in two shards of two pods of one core: one shard fills a site.

    No ``outputs.rse``: each output is registered at the disk RSE of the site that wrote it.
    """
    steps = [
        {
            "name": "isr",
            "parallelism": 2,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podAnnotations": {"kwok.steward.lsst.io/runtime": runtime},
        }
    ]
    return campaign_body(
        name,
        NAMESPACE,
        invocations=4,
        steps=steps,
        scope=scope,
        site=MANAGER_SITE,
        sites=ORDER,
        shardSize=2,
        outputs={"scope": scope},
    )


def _clusters(sites: Sites, uid: str) -> dict[str, str]:
    """The worker each of a campaign's Jobs was admitted at, as MultiKueue reports it.

    Only that campaign's: the tests of this module share the namespace, and the Jobs of a
    campaign that ran before stay in it.
    """
    found = sites.manager.queueing.workloads_by_job(NAMESPACE, _jobs(sites, uid))
    return {job: state.cluster for job, (_, state, _) in found.items() if state.cluster}


def _jobs(sites: Sites, uid: str) -> set[str]:
    listed = sites.manager.batch.list_namespaced_job(
        NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
    ).items
    return {job.metadata.name for job in listed}


def _copies(sites: Sites, where: dict[str, str], *, every: bool = True) -> dict[str, Any]:
    """The copy of each Job's ConfigMap at the worker that runs it.

    With EVERY, empty until all exist; without, those that exist.
    """
    found = {}
    for job, site in where.items():
        volumes = sites.manager.batch.read_namespaced_job(job, NAMESPACE).spec.template.spec.volumes
        listed = (
            sites.workers[site]
            .core.list_namespaced_config_map(
                NAMESPACE, field_selector=f"metadata.name={volumes[0].config_map.name}"
            )
            .items
        )
        if listed:
            found[job] = listed[0]
        elif every:
            return {}
    return found


def _attempts(harness: CampaignHarness, uid: str) -> list[Any]:
    with harness.service.sessions() as session:
        return list(LedgerStore(session).attempts(uid))


def _worker_pods(sites: Sites, uid: str) -> dict[str, list[dict[str, Any]]]:
    return {
        name: worker.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
        ).to_dict()["items"]
        for name, worker in sites.workers.items()
    }


@pytest.mark.timeout(900)  # its setup starts three clusters: about 250 s on 2 cores
def test_a_multisite_campaign_runs_at_both_sites_and_its_ledger_says_where(
    sites: Sites, manager_campaigns: CampaignHarness, rucio_data: Any, rucio_storage: Any
) -> None:
    driven = manager_campaigns.start(_body("two-sites", rucio_data.scope, runtime="30s"))
    where: dict[str, str] = {}

    def running_at_both(status: dict[str, Any]) -> bool:
        where.update(_clusters(sites, driven.uid))
        return set(where.values()) == set(ORDER) and len(where) == 2

    status = driven.until("one shard admitted at each site", running_at_both, timeout=240)
    assert status["queueing"]["queue"] == multisite_name(ORDER)
    assert not sites.manager.core.list_namespaced_pod(NAMESPACE).items  # none at the manager
    seen: dict[str, tuple[Any, str]] = {}  # a copy lives only as long as MultiKueue's Job copy

    def copied() -> bool:
        for job, found in _copies(sites, where, every=False).items():
            if job not in seen:
                copy = (
                    sites.workers[where[job]]
                    .batch.list_namespaced_job(NAMESPACE, field_selector=f"metadata.name={job}")
                    .items
                )
                seen[job] = (found, copy[0].metadata.uid if copy else "")
        return len(seen) == len(where)

    driven.until(  # the data ids its pods mount, copied to where it runs
        "each shard's ConfigMap copied to the worker running it", lambda _: copied()
    )
    for job, (mounted, copy_uid) in seen.items():  # owned there by MultiKueue's copy of the Job
        assert mounted.metadata.labels[LABEL_CAMPAIGN_UID] == driven.uid
        (owner,) = mounted.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Job", job, copy_uid)
        assert not owner.controller

    status = driven.until("the campaign done", lambda s: s["phase"] == "Succeeded", timeout=240)

    attempts = _attempts(manager_campaigns, driven.uid)
    assert sorted(a.index for a in attempts if a.klass == "Succeeded") == [0, 1, 2, 3]
    assert {a.job: a.site for a in attempts} == where  # each shard recorded at its worker
    (step,) = status["steps"]
    assert step["sites"] == {"ncsa": 2, "in2p3": 2}
    assert status["queueing"]["sites"] == {"ncsa": 1, "in2p3": 1}
    outputs = manager_campaigns.ledger.outputs(
        manager_campaigns.ledger.find("two-sites", NAMESPACE)
    )
    assert {r.index: r.site for r in outputs} == {
        a.index: a.site for a in attempts if a.klass == "Succeeded"
    }
    replicas = rucio_storage.list_replicas([did for r in outputs for did in r.outputs])
    assert status["outputs"] == len(replicas) == 4
    for record in outputs:  # registered where they were written: the disk of the site
        for did in record.outputs:
            assert replicas[did] == {f"{str(record.site).upper()}_DISK": "AVAILABLE"}
    until(  # recorded at the worker: labelled, finalizer dropped, so Kubernetes may delete them
        "every worker pod recorded and released",
        lambda: all(
            pod["metadata"]["labels"].get(LABEL_RECORDED) == "true"
            and not pod["metadata"].get("finalizers")
            for pods in _worker_pods(sites, driven.uid).values()
            for pod in pods
        ),
    )

    driven.patch_spec({"desiredState": "ClosedOut"})
    driven.until("the campaign closed out", lambda s: s["phase"] == "ClosedOut")
    for worker in sites.workers.values():  # the copies of the ConfigMaps went with it
        assert not worker.core.list_namespaced_config_map(
            NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={driven.uid}"
        ).items


@pytest.mark.timeout(900)  # its setup starts three clusters: about 250 s on 2 cores
def test_pods_that_ended_at_a_worker_while_steward_was_down_are_recorded_after_a_restart(
    sites: Sites,
    stewards: dict[str, WorkerSteward],
    rucio_storage: Any,
    database_url: str,
    rucio_data: Any,
) -> None:
    """The worker keeps every ended pod behind Steward's finalizer until the manager records it.

    The first service makes the Jobs and goes away; MultiKueue runs them to the end (and
    deletes its finished copies at the worker); a new service, as after an operator restart,
    finds every attempt at the worker and records it with its site.
    """
    first, close_first = _service(sites, rucio_storage, database_url)
    driven = first.start(_body("restarted", rucio_data.scope, runtime="3s"))
    driven.until("both shards created", lambda s: s["steps"][0]["jobs"] == 2)
    uid = driven.uid
    close_first()

    until(
        "both Jobs succeeded at their workers (as the manager's copies say)",
        lambda: all(
            (job.status.succeeded or 0) == 2
            for job in sites.manager.batch.list_namespaced_job(
                NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
            ).items
        ),
        timeout=240,
    )
    until(
        "MultiKueue deleted its finished copies of the Jobs at the workers",
        lambda: (
            not any(
                worker.batch.list_namespaced_job(
                    NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
                ).items
                for worker in sites.workers.values()
            )
        ),
    )
    held = _worker_pods(sites, uid)
    assert sum(len(pods) for pods in held.values()) >= 4
    ran_at = {
        name: {pod["metadata"]["labels"]["steward.lsst.io/job"] for pod in pods}
        for name, pods in held.items()
    }

    second, close_second = _service(sites, rucio_storage, database_url)
    try:
        restarted = Driven(second.service, driven.api, NAMESPACE, "restarted")
        status = restarted.until("the campaign done", lambda s: s["phase"] == "Succeeded")
        attempts = _attempts(second, uid)
        assert sorted(a.index for a in attempts) == [0, 1, 2, 3]
        assert all(a.job in ran_at[a.site] for a in attempts)
        assert sum(status["steps"][0]["sites"].values()) == 4
    finally:
        close_second()


@pytest.mark.timeout(900)  # its setup starts three clusters: about 250 s on 2 cores
def test_copies_at_a_worker_lost_while_the_campaign_went_are_deleted_once_it_is_back(
    sites: Sites, manager_campaigns: CampaignHarness, rucio_data: Any
) -> None:
    """A worker out of reach when its campaign goes keeps none of its ConfigMap copies.

    The campaign runs a shard at each worker, each with its ConfigMap copy. IN2P3's kubeconfig
    Secret at the manager then points at a closed port (MultiKueue and Steward both lose it),
    and the Campaign is deleted at the manager with no Steward pass after (the worst case: no
    cleanup of Steward's ever reaches IN2P3). NCSA's copy goes with MultiKueue's copy of its
    Job; IN2P3's stays while it is out of reach, and goes once the Secret is right again:
    MultiKueue's garbage collection deletes the Job copy whose Job is gone at the manager,
    and IN2P3's garbage collector the ConfigMap copy that Job owned.
    """
    driven = manager_campaigns.start(_body("lost-worker", rucio_data.scope, runtime="10m"))
    uid = driven.uid
    where: dict[str, str] = {}

    def running_at_both(_: dict[str, Any]) -> bool:
        where.update(_clusters(sites, uid))
        return set(where.values()) == set(ORDER) and len(where) == 2

    driven.until("one shard admitted at each site", running_at_both, timeout=240)
    driven.until("the ConfigMaps copied to the workers", lambda _: _copies(sites, where))
    copies = {where[job]: found.metadata.name for job, found in _copies(sites, where).items()}
    lost, kept = "in2p3", "ncsa"
    secrets_api = sites.manager.core
    good = secrets_api.read_namespaced_secret(f"{lost}-kubeconfig", "kueue-system")
    kubeconfig = yaml.safe_load(base64.b64decode(good.data["kubeconfig"]))
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()

    def copy_at(site: str) -> list[Any]:
        return (
            sites.workers[site]
            .core.list_namespaced_config_map(
                NAMESPACE, field_selector=f"metadata.name={copies[site]}"
            )
            .items
        )

    try:
        secrets_api.patch_namespaced_secret(
            f"{lost}-kubeconfig", "kueue-system", {"data": {"kubeconfig": broken}}
        )
        until(
            f"MultiKueue lost {lost}",
            lambda: not sites.manager.queueing.worker_clusters([lost])[lost][0],
            timeout=120,
        )
        driven.api.delete_namespaced_custom_object(
            "steward.lsst.io", "v1alpha1", NAMESPACE, "campaigns", "lost-worker"
        )
        until(
            f"{kept}'s copy gone with MultiKueue's copy of its Job",
            lambda: not copy_at(kept),
            timeout=180,
        )
        assert copy_at(lost), f"{lost} is out of reach: nothing can have deleted its copy"
        secrets_api.patch_namespaced_secret(
            f"{lost}-kubeconfig", "kueue-system", {"data": {"kubeconfig": good.data["kubeconfig"]}}
        )
        until(
            f"{lost}'s copy gone once MultiKueue reached it again",
            lambda: not copy_at(lost),
            timeout=300,
        )
        assert (
            not sites.workers[lost]
            .batch.list_namespaced_job(NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}")
            .items
        )
    finally:
        secrets_api.patch_namespaced_secret(
            f"{lost}-kubeconfig", "kueue-system", {"data": {"kubeconfig": good.data["kubeconfig"]}}
        )
        for worker in sites.workers.values():  # no Steward will record them: let them go
            for pod in worker.core.list_namespaced_pod(
                NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
            ).items:
                worker.core.patch_namespaced_pod(
                    pod.metadata.name, NAMESPACE, {"metadata": {"finalizers": None}}
                )


def _check_at(sites: Sites, site: str) -> dict[str, Any] | None:
    """The staging check's state on the worker's copy of the Workload (None: no copy)."""
    for workload in KueueStorage(sites.workers[site].api).list("Workload", namespace=NAMESPACE):
        for state in (workload.get("status") or {}).get("admissionChecks") or []:
            if state["name"] == STAGING_CHECK:
                return dict(state)
    return None


@pytest.mark.timeout(900)  # its setup starts three clusters: about 250 s on 2 cores
def test_a_shard_is_staged_where_it_is_admitted_and_the_other_worker_releases_its_rule(
    sites: Sites,
    stewards: dict[str, WorkerSteward],
    manager_campaigns: CampaignHarness,
    rucio_data: Any,
    rucio_storage: Any,
    rucio_server: Any,
) -> None:
    """Inputs on tape: each worker stages the shard to its disk and is admitted only when OK.

    Both workers reserve quota for their copy and make a rule of the shard's input dataset
    to their own disk; neither admits while Rucio recalls. NCSA's Steward then stops, the
    recall to IN2P3 completes, IN2P3 admits and MultiKueue deletes NCSA's copy; NCSA's
    Steward, back, releases its rule through the deletion gate.
    """
    inputs = [rucio_data.dataset(rse="IN2P3_TAPE") for _ in range(2)]
    steps = [
        {
            "name": "isr",
            "parallelism": 2,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podAnnotations": {"kwok.steward.lsst.io/runtime": "3s"},
        }
    ]
    body = campaign_body(
        "staged-at-worker",
        NAMESPACE,
        invocations=0,
        steps=steps,
        scope=rucio_data.scope,
        site=MANAGER_SITE,
        sites=ORDER,
        shardSize=2,
        coverage={"query": {"dids": inputs}},
        inputs={"prestage": True},
        outputs={"scope": rucio_data.scope},
    )
    driven = manager_campaigns.start(body)
    driven.until("the shard's Job made", lambda s: s["steps"][0]["jobs"] == 1)
    [job] = sites.manager.batch.list_namespaced_job(
        NAMESPACE, label_selector=f"{LABEL_CAMPAIGN_UID}={driven.uid}"
    ).items
    dataset = job.spec.template.metadata.annotations[STAGING_ANNOTATION]
    files = sorted(f for did in inputs for f in rucio_data.files_of(did))
    assert rucio_storage.list_content(dataset) == files  # registered by the manager

    def rule_at(site: str) -> Rule | None:
        found = [
            r
            for r in rucio_storage.list_did_rules(dataset)
            if r.rse_expression == f"{site.upper()}_DISK"
        ]
        return found[0] if found else None

    until("a staging rule at each worker's disk", lambda: all(rule_at(s) for s in ORDER))
    until(
        "both copies waiting for the recall",
        lambda: all(
            (check := _check_at(sites, s)) is not None
            and check["state"] == "Pending"
            and "REPLICATING" in check["message"]
            for s in ORDER
        ),
    )
    assert not _clusters(sites, driven.uid)  # admitted nowhere while the inputs are on tape
    assert not any(_worker_pods(sites, driven.uid).values())

    stewards["ncsa"].running.clear()
    try:
        assert stewards["ncsa"].idle.wait(30)
        in2p3 = until(
            "the inputs recalled to IN2P3_DISK",
            lambda: (rule := rule_at("in2p3")) is not None and rule.state is RuleState.OK and rule,
            between=lambda: rucio_server.daemons.converge(scope=rucio_data.scope),
            timeout=240,
        )
        until(
            "the shard admitted at IN2P3",
            lambda: _clusters(sites, driven.uid).get(job.metadata.name) == "in2p3",
        )
        key = f"{NAMESPACE}/{_workload(sites, job.metadata.name)}"
        answered = stewards["in2p3"].passes
        assert any(key in p.ready for p in answered)
        first_ready = next(i for i, p in enumerate(answered) if key in p.ready)
        assert any("REPLICATING" in p.pending.get(key, "") for p in answered[:first_ready])
    finally:
        stewards["ncsa"].running.set()  # back, whatever happened: the next test needs it
    ncsa = until(
        "NCSA's rule released once its copy is gone",
        lambda: (rule := rule_at("ncsa")) is not None and _released(rule) and rule,
        timeout=120,
    )
    audit = stewards["ncsa"].service.audit
    intents = audit.query(AuditFilter(kind="AdmissionCheck", action="deletion.intent"))
    assert any(ncsa.id in str(entry.after) for entry in intents)  # through the gate

    status = driven.until("the campaign done", lambda s: s["phase"] == "Succeeded", timeout=240)
    attempts = _attempts(manager_campaigns, driven.uid)
    assert sorted(a.index for a in attempts if a.klass == "Succeeded") == [0, 1]
    assert {a.site for a in attempts} == {"in2p3"}
    assert status["steps"][0]["sites"] == {"in2p3": 2}
    until(  # the winner's rule too, once MultiKueue removed the finished copy
        "IN2P3's rule released after the shard finished",
        lambda: (rule := rucio_storage.get_rule(in2p3.id)) is not None and _released(rule),
        timeout=120,
    )


def _workload(sites: Sites, job: str) -> str:
    found = sites.manager.queueing.workloads_by_job(NAMESPACE, {job})
    return found[job][0]


def _released(rule: Rule) -> bool:
    """Whether the rule expires within the release lifetime (a day)."""
    horizon = datetime.now(UTC) + timedelta(days=1, minutes=5)
    return rule.expires_at is not None and rule.expires_at <= horizon
