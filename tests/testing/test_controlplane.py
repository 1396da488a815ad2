"""The control-plane harness: a real cluster that schedules and completes Jobs on kwok nodes,
admits or rejects Steward resources by their CRD schema, and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import kubernetes
import pytest
import yaml

from steward.constants import API_VERSION, GROUP, VERSION
from steward.testing.controlplane import ControlPlane, ControlPlaneError, process_alive
from steward.testing.k8sbuild import KUBERNETES_VERSION, Binaries
from support.kube import CRDS_DIR, NODE_COUNT, REPO_ROOT
from support.waiting import until


def test_startup_failure_quotes_the_component_log(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    etcd = bin_dir / "etcd"
    etcd.write_text("#!/bin/sh\necho 'etcd: cannot open data dir: permission denied'\nexit 3\n")
    etcd.chmod(0o755)

    with pytest.raises(ControlPlaneError) as caught:
        ControlPlane(binaries=Binaries(bin_dir), run_dir=tmp_path / "run").start()

    message = str(caught.value)
    assert "etcd exited with status 3" in message
    assert "cannot open data dir: permission denied" in message


@pytest.mark.kube
def test_version_is_the_pinned_release(kube_api: kubernetes.client.ApiClient) -> None:
    version = kubernetes.client.VersionApi(kube_api).get_code()
    assert version.git_version == KUBERNETES_VERSION


@pytest.mark.kube
def test_kwok_nodes_are_ready(kube_api: kubernetes.client.ApiClient) -> None:
    nodes = kubernetes.client.CoreV1Api(kube_api).list_node(label_selector="type=kwok").items
    assert len(nodes) == NODE_COUNT
    for node in nodes:
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"


@pytest.mark.kube
def test_indexed_job_runs_to_completion_on_kwok_nodes(
    kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    batch = kubernetes.client.BatchV1Api(kube_api)
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "indexed"},
            "spec": {
                "completionMode": "Indexed",
                "completions": 3,
                "parallelism": 3,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "step", "image": "example.invalid/step:1"}],
                    }
                },
            },
        },
    )

    def complete() -> kubernetes.client.V1Job | None:
        job = batch.read_namespaced_job("indexed", namespace)
        conditions = job.status.conditions or []
        done = any(c.type == "Complete" and c.status == "True" for c in conditions)
        return job if done else None

    job = until("Job indexed Complete", complete)
    assert job.status.succeeded == 3
    assert job.status.completed_indexes == "0-2"
    pods = kubernetes.client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    assert len(pods) == 3
    assert {pod.status.phase for pod in pods} == {"Succeeded"}
    assert all(pod.spec.node_name.startswith("kwok-node-") for pod in pods)


@pytest.mark.kube
def test_service_account_kubeconfig_acts_as_the_account(
    control_plane: ControlPlane, kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    kubernetes.client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, {"metadata": {"name": "robot"}}
    )

    path = control_plane.service_account_kubeconfig(namespace, "robot")

    with kubernetes.config.new_client_from_config(config_file=str(path)) as client:
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"
        with pytest.raises(kubernetes.client.ApiException) as caught:
            kubernetes.client.CoreV1Api(client).list_namespaced_pod(namespace)
        assert caught.value.status == 403


def _kubectl(
    binaries: Binaries, plane: ControlPlane, *args: str
) -> subprocess.CompletedProcess[str]:
    command = [str(binaries.kubectl), "--kubeconfig", str(plane.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _site(name: str, facility: str, rse_type: str) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Site",
        "metadata": {"name": name},
        "spec": {
            "facility": facility,
            "rses": [
                {
                    "name": f"{facility}_DISK",
                    "type": rse_type,
                    "protocols": [
                        {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/x"}
                    ],
                }
            ],
        },
    }


@pytest.mark.kube
def test_invalid_site_is_rejected_at_admission(
    kube_api: kubernetes.client.ApiClient, crd_errors: dict[str, str]
) -> None:
    assert "site.yaml" not in crd_errors, crd_errors["site.yaml"]
    custom = kubernetes.client.CustomObjectsApi(kube_api)

    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.create_cluster_custom_object(
            GROUP, VERSION, "sites", _site("bad-site", facility="lower", rse_type="FLOPPY")
        )

    assert caught.value.status == 422
    body = json.loads(caught.value.body)
    fields = {cause["field"] for cause in body["details"]["causes"]}
    assert {"spec.facility", "spec.rses[0].type"} <= fields


@pytest.mark.kube
def test_valid_site_is_accepted_and_listed_by_kubectl(
    control_plane: ControlPlane,
    kube_api: kubernetes.client.ApiClient,
    kube_binaries: Binaries,
    crd_errors: dict[str, str],
) -> None:
    assert "site.yaml" not in crd_errors, crd_errors["site.yaml"]
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    custom.create_cluster_custom_object(
        GROUP, VERSION, "sites", _site("good-site", facility="TESTSITE", rse_type="DISK")
    )
    try:
        listed = _kubectl(kube_binaries, control_plane, "get", "site", "good-site", "-o", "yaml")
        assert listed.returncode == 0, listed.stderr
        site = yaml.safe_load(listed.stdout)
        assert site["spec"]["facility"] == "TESTSITE"
        # Defaults from the schema are applied at admission.
        assert site["spec"]["rses"][0]["protocols"][0]["read"] == 1
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, "sites", "good-site")


@pytest.mark.kube
def test_committed_sites_pass_admission(
    control_plane: ControlPlane, kube_binaries: Binaries, crd_errors: dict[str, str]
) -> None:
    assert "site.yaml" not in crd_errors, crd_errors["site.yaml"]
    sites = REPO_ROOT / "sites"
    result = _kubectl(kube_binaries, control_plane, "apply", "--dry-run=server", "-f", str(sites))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(
        list((REPO_ROOT / "sites").glob("*.yaml"))
    )


@pytest.mark.kube
def test_every_crd_file_is_installed(
    kube_api: kubernetes.client.ApiClient, crd_errors: dict[str, str]
) -> None:
    assert crd_errors == {}
    installed = {
        crd.metadata.name
        for crd in kubernetes.client.ApiextensionsV1Api(kube_api)
        .list_custom_resource_definition()
        .items
    }
    for path in CRDS_DIR.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["metadata"]["name"] in installed


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from steward.testing.controlplane import ControlPlane
    from steward.testing.k8sbuild import Binaries

    plane = ControlPlane(binaries=Binaries(Path(sys.argv[1])), run_dir=Path(sys.argv[2]))
    plane.start()
    print(json.dumps([c.pid for c in plane.components()]), flush=True)
    sys.stdin.read()  # until the test kills us
    """
)


@pytest.mark.kube
def test_components_die_with_a_killed_parent(kube_binaries: Binaries, tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(kube_binaries.bin_dir), str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        try:
            assert len(pids) == 5
            assert all(process_alive(pid) for pid in pids)

            parent.kill()  # SIGKILL: no atexit, no finally; only the kernel can clean up
            parent.wait()

            until("the components to die", lambda: not any(map(process_alive, pids)), timeout=15)
        finally:
            for pid in filter(process_alive, pids):
                os.killpg(pid, signal.SIGKILL)
