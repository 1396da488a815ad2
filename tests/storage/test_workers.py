"""WorkerBatches: a worker cluster's batch API from a MultiKueue kubeconfig Secret.

Against the session's real API server: the "worker" is the same cluster, reached through a
Secret holding its admin kubeconfig (as MultiKueue's are), or a kubeconfig whose server
refuses connections.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from steward.exceptions import NotFoundError, PermanentError, TransientError
from steward.storage.batch import BatchStorage, Owner
from steward.storage.workers import WorkerBatches
from steward.testing.childprocess import free_port
from steward.testing.controlplane import ControlPlane
from support.waiting import until

pytestmark = pytest.mark.kube


def _secret(api: kubernetes.client.ApiClient, namespace: str, name: str, data: dict[str, Any]):
    body = {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    core = kubernetes.client.CoreV1Api(api)
    try:
        core.create_namespaced_secret(namespace, body)
    except kubernetes.client.exceptions.ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def _kubeconfig(path: Path, server: str | None = None) -> bytes:
    loaded = yaml.safe_load(path.read_text())
    if server is not None:
        for cluster in loaded["clusters"]:
            cluster["cluster"]["server"] = server
    return yaml.safe_dump(loaded).encode()


def test_a_worker_is_reached_with_its_secret_and_a_rotated_secret_is_read_again(
    kube_api: kubernetes.client.ApiClient, control_plane: ControlPlane, namespace: str
) -> None:
    workers = WorkerBatches(kube_api, namespace=namespace)
    try:
        _secret(kube_api, namespace, "ncsa", {"kubeconfig": _kubeconfig(control_plane.kubeconfig)})
        kubernetes.client.CoreV1Api(kube_api).create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "shard", "labels": {"steward.lsst.io/campaign-uid": "u1"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        )
        batch = workers.batch("ncsa")
        pods = batch.unrecorded_pods(namespace, {"steward.lsst.io/campaign-uid": "u1"})
        assert [pod["metadata"]["name"] for pod in pods] == ["shard"]
        assert workers.batch("ncsa") is batch  # kept while the Secret is unchanged

        dead = f"https://127.0.0.1:{free_port()}"
        _secret(
            kube_api, namespace, "ncsa", {"kubeconfig": _kubeconfig(control_plane.kubeconfig, dead)}
        )
        rotated = workers.batch("ncsa")
        assert rotated is not batch
        with pytest.raises(TransientError, match="cannot reach the API server"):
            rotated.unrecorded_pods(namespace, {"steward.lsst.io/campaign-uid": "u1"})
    finally:
        workers.close()


def test_a_missing_or_unusable_secret_is_an_error_naming_it(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    workers = WorkerBatches(kube_api, namespace=namespace)
    try:
        with pytest.raises(NotFoundError, match="in2p3-kubeconfig"):
            workers.batch("in2p3-kubeconfig")
        _secret(kube_api, namespace, "nokey", {"config": b"x"})
        with pytest.raises(PermanentError, match="Secret nokey has no key 'kubeconfig'"):
            workers.batch("nokey")
        _secret(kube_api, namespace, "garbage", {"kubeconfig": b"clusters: [oops"})
        with pytest.raises(PermanentError, match="Secret garbage: its kubeconfig is not usable"):
            workers.batch("garbage")
    finally:
        workers.close()


def test_a_worker_copy_of_a_configmap_has_no_owner_and_goes_by_label(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    batch = BatchStorage(kube_api)
    try:
        labels = {"steward.lsst.io/campaign-uid": "u1"}
        assert batch.create_config_map(namespace, "data-s0", {"0": "{}"}, owner=None, labels=labels)
        assert not batch.create_config_map(
            namespace, "data-s0", {"0": "{}"}, owner=None, labels=labels
        )
        batch.create_config_map(namespace, "other", {"0": "{}"}, owner=None, labels={"x": "y"})
        assert batch.config_map_data(namespace, "data-s0") == {"0": "{}"}
        assert batch.config_map_data(namespace, "absent") is None
        core = kubernetes.client.CoreV1Api(kube_api)
        assert not core.read_namespaced_config_map("data-s0", namespace).metadata.owner_references

        batch.delete_config_maps(namespace, labels)

        assert batch.config_map_data(namespace, "data-s0") is None
        assert batch.config_map_data(namespace, "other") == {"0": "{}"}
    finally:
        batch.close()


def _job(batch_api: kubernetes.client.BatchV1Api, namespace: str, name: str) -> str:
    """A suspended Job (nothing runs); its uid."""
    body = {
        "metadata": {"name": name},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }
            },
        },
    }
    return str(batch_api.create_namespaced_job(namespace, body).metadata.uid)


def test_a_worker_copy_owned_by_job_copies_goes_when_the_last_of_them_goes(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """The copy's owners are added one by one, kept, and the garbage collector deletes it
    once every owning Job is gone (not before)."""
    jobs = kubernetes.client.BatchV1Api(kube_api)
    first, second = _job(jobs, namespace, "isr-s0"), _job(jobs, namespace, "calib-s0")
    batch = BatchStorage(kube_api)
    try:
        labels = {"steward.lsst.io/campaign-uid": "u2"}
        owner = Owner("batch/v1", "Job", "isr-s0", first, controller=False)
        assert batch.config_map_owners(namespace, "data-s0") is None
        assert not batch.add_config_map_owner(namespace, "data-s0", owner)
        assert batch.create_config_map(
            namespace, "data-s0", {"0": "{}"}, owner=owner, labels=labels
        )
        assert batch.config_map_owners(namespace, "data-s0") == {first}

        also = Owner("batch/v1", "Job", "calib-s0", second, controller=False)
        assert batch.add_config_map_owner(namespace, "data-s0", also)
        assert batch.add_config_map_owner(namespace, "data-s0", also)  # idempotent
        assert batch.config_map_owners(namespace, "data-s0") == {first, second}
        core = kubernetes.client.CoreV1Api(kube_api)
        refs = core.read_namespaced_config_map("data-s0", namespace).metadata.owner_references
        assert {(r.name, r.controller, r.block_owner_deletion) for r in refs} == {
            ("isr-s0", False, False),
            ("calib-s0", False, False),
        }

        jobs.delete_namespaced_job("isr-s0", namespace, propagation_policy="Background")
        until(
            "the garbage collector dropped the deleted Job from the owners",
            lambda: batch.config_map_owners(namespace, "data-s0") in ({second}, None),
        )
        assert batch.config_map_owners(namespace, "data-s0") == {second}  # kept: one owner left
        jobs.delete_namespaced_job("calib-s0", namespace, propagation_policy="Background")
        until(
            "the copy deleted with its last owner",
            lambda: batch.config_map_owners(namespace, "data-s0") is None,
        )
    finally:
        batch.close()
