"""The Kueue harness: the real Kueue on a real control plane, webhooks reached by URL."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from steward.testing.devkueue import worker_sites
from steward.testing.kueue import KUEUE_API, KUEUE_NAMESPACE, batch_site
from support.kueue import Cluster, indexed_job, unique
from support.waiting import until


@pytest.mark.kube
def test_a_labelled_job_is_admitted_by_kueue_onto_its_pool(
    kueue_cluster: Cluster, kueue_namespace: str
) -> None:
    site = batch_site(unique("harness", 20), {"prod": {"cpu": "4", "memory": "16Gi"}})
    kueue_cluster.queueing.reconcile_site(site)
    (queue, *_) = kueue_cluster.queueing.ensure_local_queues(site, kueue_namespace)
    batch = kueue_cluster.batch

    batch.create_namespaced_job(kueue_namespace, indexed_job("queued", queue=queue, runtime="2s"))
    batch.create_namespaced_job(kueue_namespace, indexed_job("plain", queue=None, runtime="2s"))

    def workloads() -> list[dict[str, object]]:
        return kueue_cluster.plane.request(
            "GET", f"{KUEUE_API}/namespaces/{kueue_namespace}/workloads"
        )["items"]

    until(
        "the queued Job's Workload admitted",
        lambda: [
            w
            for w in workloads()
            if any(
                c["type"] == "Admitted" and c["status"] == "True"
                for c in w.get("status", {}).get("conditions", [])
            )
        ],
    )
    until(
        "both Jobs complete",
        lambda: all(
            (batch.read_namespaced_job(name, kueue_namespace).status.succeeded or 0) == 1
            for name in ("queued", "plain")
        ),
    )
    owners = {w["metadata"]["ownerReferences"][0]["name"] for w in workloads()}
    assert owners == {"queued"}  # the unlabelled Job never went through Kueue
    pods = {
        pod.metadata.labels["job-name"]: pod
        for pod in kueue_cluster.core.list_namespaced_pod(kueue_namespace).items
    }
    assert pods["queued"].spec.node_selector == {"pool": "batch"}  # the flavor's node labels
    assert not pods["plain"].spec.node_selector


@pytest.mark.kube
def test_kueue_keeps_the_generated_certificate_and_converts_old_versions(
    kueue_cluster: Cluster, kueue_namespace: str
) -> None:
    secret = kueue_cluster.core.read_namespaced_secret("kueue-webhook-server-cert", KUEUE_NAMESPACE)
    served = (kueue_cluster.kueue.run_dir / "pki" / "serving" / "tls.crt").read_bytes()
    assert base64.b64decode(secret.data["tls.crt"]) == served  # the rotator kept ours

    site = batch_site(unique("convert", 20), {"prod": {"cpu": "1", "memory": "1Gi"}})
    kueue_cluster.queueing.reconcile_site(site)
    (queue, *_) = kueue_cluster.queueing.ensure_local_queues(site, kueue_namespace)
    old = kueue_cluster.plane.request(
        "GET", f"/apis/kueue.x-k8s.io/v1beta1/namespaces/{kueue_namespace}/localqueues/{queue}"
    )
    assert old["apiVersion"] == "kueue.x-k8s.io/v1beta1"
    assert old["spec"]["clusterQueue"] == queue


def test_the_local_stack_dispatches_to_the_sites_that_declare_a_kubeconfig() -> None:
    repo = Path(__file__).resolve().parents[2]

    sites = worker_sites(repo)

    assert [site.metadata.name for site in sites] == ["in2p3", "ncsa"]  # sites/ in file order
    assert all(site.spec.batch and site.spec.batch.kubeconfig_secret for site in sites)
    assert worker_sites(None) == []
