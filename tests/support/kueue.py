"""Fixtures for Kueue on real control planes: one cluster, and a MultiKueue manager with workers.

Kueue's webhooks act on every Job of the cluster they are installed in, so the Kueue tests get
control planes of their own rather than sharing the session's (whose Jobs other tests create
without Kueue). `kueue_cluster` is one control plane with two kwok nodes of the node pool
``pool=batch`` and Kueue; `start_sites` starts a manager and worker control planes, each with
its own kwok nodes and Kueue, and connects the workers to the manager through MultiKueue.

Every pod of `indexed_job` runs for the given runtime on kwok (the queueing Stage of
`steward.testing.kueue`) before it succeeds, so it holds quota as a real pod would.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from steward.services.queueing import QueueingService, job_labels
from steward.storage.kueue import KueueStorage
from steward.testing.controlplane import ControlPlane
from steward.testing.k8sbuild import Binaries, KueueBuild, ensure_kueue
from steward.testing.kueue import (
    POOL_LABELS,
    QUEUEING_STAGES,
    Kueue,
    KueueSettings,
    worker_kubeconfig_secret,
)

RUNTIME_ANNOTATION = "kwok.steward.lsst.io/runtime"
CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or reuse Kueue before the first test, so a cold build is not charged to it."""
    if session.config.option.collectonly:
        return
    if not any("kueue_build" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    ensure_kueue(log=reporter.write_line if reporter else None)


@pytest.fixture(scope="session")
def kueue_build() -> KueueBuild:
    """Kueue's manager and manifests, built from the pinned Go module (or from the cache)."""
    return ensure_kueue()


@dataclass
class Cluster:
    """A control plane with Kueue, and clients for it."""

    name: str
    plane: ControlPlane
    kueue: Kueue
    api: kubernetes.client.ApiClient
    queueing: QueueingService = field(init=False)

    def __post_init__(self) -> None:
        self.queueing = QueueingService(KueueStorage(self.api))

    @property
    def batch(self) -> kubernetes.client.BatchV1Api:
        """Jobs."""
        return kubernetes.client.BatchV1Api(self.api)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        """Namespaces, pods."""
        return kubernetes.client.CoreV1Api(self.api)

    def namespace(self, name: str) -> str:
        """Create namespace NAME (idempotent) and wait until pods can be created in it."""
        if self.core.list_namespace(field_selector=f"metadata.name={name}").items == []:
            self.core.create_namespace({"metadata": {"name": name}})
        self.plane.wait_for_service_account(name)
        return name


def start_cluster(
    stack: ExitStack,
    name: str,
    binaries: Binaries,
    build: KueueBuild,
    run_dir: Path,
    *,
    nodes: int = 2,
    settings: KueueSettings | None = None,
) -> Cluster:
    """Start a control plane with NODES kwok nodes of the batch pool, and Kueue on it."""
    plane = stack.enter_context(
        ControlPlane(binaries=binaries, run_dir=run_dir, stages=[QUEUEING_STAGES])
    )
    if nodes:
        plane.create_nodes(nodes, labels=POOL_LABELS)
    kueue = stack.enter_context(Kueue(plane, build=build, settings=settings))
    api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
    stack.callback(api.close)
    return Cluster(name, plane, kueue, api)


@pytest.fixture(scope="session")
def kueue_cluster(
    kube_binaries: Binaries, kueue_build: KueueBuild, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One control plane with Kueue, for the single-site tests (logs under its run dir)."""
    with ExitStack() as stack:
        cluster = start_cluster(
            stack, "single", kube_binaries, kueue_build, tmp_path_factory.mktemp("kueue-plane")
        )
        cluster.plane.install_crds(CRDS_DIR)  # campaigns on Kueue read their Site
        yield cluster


@pytest.fixture
def kueue_namespace(request: pytest.FixtureRequest, kueue_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace on `kueue_cluster`, deleted afterwards."""
    name = unique(request.node.name)
    kueue_cluster.namespace(name)
    yield name
    kueue_cluster.core.delete_namespace(name)


def unique(text: str, length: int = 40) -> str:
    """A Kubernetes name from TEXT, unique to this call."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length]
    return f"{slug}-{uuid.uuid4().hex[:6]}"


def indexed_job(
    name: str,
    *,
    queue: str | None,
    priority: str = "normal",
    completions: int = 1,
    parallelism: int = 1,
    cpu: str = "1",
    runtime: str = "1h",
    runtimes: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """An Indexed Job whose pods run RUNTIME on kwok, handed to Kueue's QUEUE (None: not)."""
    labels = job_labels(queue, priority) if queue is not None else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimitPerIndex": 1,
            "podReplacementPolicy": "Failed",
            "template": {
                "metadata": {"annotations": {RUNTIME_ANNOTATION: runtime}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}},
                        }
                    ],
                },
            },
        },
    }


@dataclass
class Sites:
    """A MultiKueue manager and its workers, by site name."""

    manager: Cluster
    workers: dict[str, Cluster]


def start_sites(
    stack: ExitStack,
    binaries: Binaries,
    build: KueueBuild,
    base: Path,
    workers: list[str],
    settings: KueueSettings,
) -> Sites:
    """Start a manager control plane (no nodes) and one per worker, and connect them.

    The manager gets a Secret per worker holding the worker's admin kubeconfig, named
    ``<worker>-kubeconfig`` (what the workers' Sites name as ``kubeconfigSecret``).
    """
    manager = start_cluster(
        stack, "manager", binaries, build, base / "manager", nodes=0, settings=settings
    )
    started = {
        name: start_cluster(stack, name, binaries, build, base / name, settings=settings)
        for name in workers
    }
    for name, worker in started.items():
        manager.plane.apply(
            "/api/v1/namespaces/kueue-system/secrets",
            worker_kubeconfig_secret(f"{name}-kubeconfig", worker.plane),
        )
    return Sites(manager, started)
