"""Fixtures for the real Kubernetes control plane of `steward.testing.controlplane`.

Tests marked ``kube`` use them. One control plane serves the whole session: three kwok nodes,
the CRDs of crds/ installed. Each test gets its own namespace, so tests do not see each other's
namespaced objects; cluster-scoped objects (Sites) need names unique to the test.

The binaries are built (or found in the cache) once collection is done and before the first
test runs, so a cold build is not charged to the first test's timeout.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from steward.testing.controlplane import ControlPlane, ControlPlaneError
from steward.testing.k8sbuild import Binaries, ensure_binaries

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"
NODE_COUNT = 3


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or reuse the binaries when a selected test needs the control plane."""
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("kube") for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    ensure_binaries(log=reporter.write_line if reporter else None)


@pytest.fixture(scope="session")
def kube_binaries() -> Binaries:
    """kube-apiserver, kubectl and the rest, built from the pinned Go modules."""
    return ensure_binaries()


_CRD_ERRORS = pytest.StashKey[dict[str, str]]()


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest,
    kube_binaries: Binaries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    """The session's control plane, with kwok nodes and Steward's CRDs.

    Each file of crds/ is installed on its own: a CRD the API server rejects is recorded (see
    `crd_errors`) instead of failing every test of the session.

    Its run directory (logs of every component) is under pytest's basetemp, which pytest keeps
    for the last runs: read ``<basetemp>/control-plane0/*.log`` after a failure.
    """
    with ControlPlane(
        binaries=kube_binaries, run_dir=tmp_path_factory.mktemp("control-plane")
    ) as plane:
        plane.create_nodes(NODE_COUNT)
        errors = request.config.stash.setdefault(_CRD_ERRORS, {})
        for path in sorted(CRDS_DIR.glob("*.yaml")):
            try:
                plane.install_crds(path)
            except ControlPlaneError as error:
                errors[path.name] = str(error)
        yield plane


@pytest.fixture(scope="session")
def crd_errors(request: pytest.FixtureRequest, control_plane: ControlPlane) -> dict[str, str]:
    """Why each file of crds/ that the API server rejected was rejected, by file name."""
    del control_plane  # requested for its side effect: the installation
    return request.config.stash[_CRD_ERRORS]


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    """A kubernetes ApiClient acting as the cluster admin."""
    client = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    with client:
        yield client


@pytest.fixture
def namespace(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    kube_api: kubernetes.client.ApiClient,
) -> Iterator[str]:
    """A fresh namespace named after the test, ready for pods; deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50]
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    control_plane.wait_for_service_account(name)
    yield name
    core.delete_namespace(name)
