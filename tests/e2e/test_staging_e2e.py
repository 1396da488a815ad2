"""A worker's Steward, the real operator process, answers its staging check.

`tests/services/test_staging_check.py` calls the service; `test_multikueue_campaign.py` runs it
in a loop of the test's own. This runs ``steward operator`` at a worker, as deployed there
(``STEWARD_SITE`` its site), against a real API server with Kueue and the real Rucio, so the
wiring is what is under test: the Campaign handler that makes the worker's queue for a
multi-site campaign listing the site, and the timer on the local Site that activates the
check, stages a copy's inputs, sets the check Ready and releases the rule once the copy goes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from steward.constants import GROUP, VERSION
from steward.services.campaign.staging_check import OWNER
from steward.services.ownership import owner_tag
from steward.services.queueing import STAGING_ANNOTATION, STAGING_CHECK, multisite_name
from steward.storage.kueue import KueueStorage
from steward.storage.rucio import Rule
from steward.testing.kueue import batch_site
from steward.testing.operatorprocess import OperatorProcess
from support.campaigns import campaign_body
from support.kueue import Cluster, indexed_job, unique
from support.operator import base_operator_env
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

MANAGER = "usdf"


def _condition(body: dict[str, Any] | None, kind: str) -> str | None:
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


@pytest.fixture
def worker(
    kueue_cluster: Cluster,
    kueue_namespace: str,
    rucio_server: Any,
    database_url: str,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, str, str]]:
    """The worker's operator (its site, its cluster identity) and its Site, removed afterwards."""
    site = batch_site(unique("worker", 20), {"prod": {"cpu": "2", "memory": "4Gi"}})
    name = site.metadata.name
    cluster_id = f"worker-{secrets.token_hex(4)}"
    env = {
        **base_operator_env(kueue_cluster.plane.kubeconfig, rucio_server, database_url, tmp_path),
        "STEWARD_SITE": name,
        "STEWARD_CLUSTER_ID": cluster_id,
        "STEWARD_CAMPAIGN_INTERVAL": "1",
        "STEWARD_OPERATOR_NAMESPACE": kueue_namespace,
    }
    objects = kubernetes.client.CustomObjectsApi(kueue_cluster.api)
    objects.create_cluster_custom_object(
        GROUP, VERSION, "sites", site.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    process = OperatorProcess(env, tmp_path / "operator.log")
    try:
        process.start(timeout=90)
        yield process, name, cluster_id
    finally:
        process.stop()
        # The Site keeps its finalizer while its RSE holds the test's replicas: let it go.
        objects.patch_cluster_custom_object(
            GROUP, VERSION, "sites", name, {"metadata": {"finalizers": None}}
        )
        objects.delete_cluster_custom_object(GROUP, VERSION, "sites", name)
        kueue_cluster.queueing.remove_site(name)


def _released(rule: Rule) -> bool:
    horizon = datetime.now(UTC) + timedelta(days=1, minutes=5)
    return rule.expires_at is not None and rule.expires_at <= horizon


@pytest.mark.timeout(300)
def test_the_workers_operator_stages_a_copys_inputs_admits_it_and_releases_them_after(
    kueue_cluster: Cluster,
    kueue_namespace: str,
    worker: tuple[OperatorProcess, str, str],
    rucio_storage: Any,
    rucio_data: Any,
) -> None:
    process, site, cluster_id = worker
    disk = f"{site.upper().replace('-', '_')}_DISK"
    until(
        "the worker's Site Ready (its RSE registered in Rucio)",
        lambda: (
            _condition(
                kubernetes.client.CustomObjectsApi(kueue_cluster.api).get_cluster_custom_object(
                    GROUP, VERSION, "sites", site
                ),
                "Ready",
            )
            == "True"
        ),
        between=process.check_alive,
    )
    inputs = rucio_data.dataset(rse=disk)
    sites = [site, unique("elsewhere", 20)]
    campaign = campaign_body(
        unique("dispatched"),
        kueue_namespace,
        invocations=1,
        steps=[{"name": "isr"}],
        scope=rucio_data.scope,
        site=MANAGER,
        sites=sites,
    )
    objects = kubernetes.client.CustomObjectsApi(kueue_cluster.api)
    objects.create_namespaced_custom_object(GROUP, VERSION, kueue_namespace, "campaigns", campaign)
    kueue = KueueStorage(kueue_cluster.api)
    until(
        "the staging check Active, set by the worker's timer",
        lambda: _condition(kueue.get("AdmissionCheck", STAGING_CHECK), "Active") == "True",
        between=process.check_alive,
    )
    queue = multisite_name(sites)
    until(
        "the worker's LocalQueue for the campaign",
        lambda: kueue.get("LocalQueue", queue, namespace=kueue_namespace) is not None,
        between=process.check_alive,
    )

    # MultiKueue's copy of a shard's Job, as it reaches this worker: the inputs on the template.
    job = indexed_job(unique("shard-0"), queue=queue, runtime="1h")
    job["spec"]["template"]["metadata"]["annotations"][STAGING_ANNOTATION] = inputs
    kueue_cluster.batch.create_namespaced_job(kueue_namespace, job)
    until(
        "the copy admitted once its inputs are on the site's disk",
        lambda: any(
            w.phase == "Admitted" for w in kueue_cluster.queueing.workloads(kueue_namespace)
        ),
        between=process.check_alive,
    )
    tag = owner_tag(cluster_id, OWNER)
    [rule] = [r for r in rucio_storage.list_did_rules(inputs) if r.comment == tag]
    assert rule.rse_expression == disk
    assert not _released(rule)
    [workload] = kueue.list("Workload", namespace=kueue_namespace)
    [check] = workload["status"]["admissionChecks"]
    assert (check["name"], check["state"]) == (STAGING_CHECK, "Ready")
    assert inputs in check["message"]

    kueue_cluster.batch.delete_namespaced_job(
        job["metadata"]["name"], kueue_namespace, propagation_policy="Background"
    )
    until(
        "the staging rule released through the gate once the copy is gone",
        lambda: _released(rucio_storage.get_rule(rule.id)),
        between=process.check_alive,
    )
    name = campaign["metadata"]["name"]
    objects.delete_namespaced_custom_object(GROUP, VERSION, kueue_namespace, "campaigns", name)
    until(
        "the campaign gone while the worker's operator runs (no finalizer left behind)",
        lambda: (
            name
            not in {
                item["metadata"]["name"]
                for item in objects.list_namespaced_custom_object(
                    GROUP, VERSION, kueue_namespace, "campaigns"
                )["items"]
            }
        ),
        between=process.check_alive,
    )
