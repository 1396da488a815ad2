"""Fixtures for the real Kubernetes control plane of `steward.testing.controlplane`.

Tests marked ``kube`` use them. One control plane serves the whole session: three kwok nodes,
the CRDs of crds/ installed. Each test gets its own namespace, so tests do not see each other's
namespaced objects; cluster-scoped objects (Sites) need names unique to the test, and the
`janitor` removes both after the test, so tests pass in any order.

The binaries are built (or found in the cache) once collection is done and before the first
test runs, so a cold build is not charged to the first test's timeout.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from steward.constants import GROUP, VERSION
from steward.models import KINDS
from steward.testing.childprocess import poll
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
    janitor: Janitor,
) -> Iterator[str]:
    """A fresh namespace named after the test, ready for pods; deleted afterwards.

    Its Steward resources are cleaned by the `janitor` first: the namespace is deleted only
    once none is left with a finalizer, so a later test's operator never finalizes them.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50]
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    control_plane.wait_for_service_account(name)
    janitor.namespaces.add(name)
    yield name
    janitor.sweep()
    core.delete_namespace(name)


class Janitor:
    """Removes what a test left in the shared cluster, so no later test or operator sees it.

    Cluster-scoped Sites the test created, and every Steward resource in its namespaces, are
    deleted. `release` waits for them to go while an operator runs (its finalizers release
    Rucio's side); `sweep`, once nothing runs any more, removes Steward's finalizers from
    whatever is left so the objects go at once: an operator of a later test must not finalize
    them, and a Site declaring a shared RSE must not be registered again.
    """

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.objects = kubernetes.client.CustomObjectsApi(api)
        self.sites_before = self._site_names()
        self.namespaces: set[str] = set()

    def _site_names(self) -> set[str]:
        listed = self.objects.list_cluster_custom_object(GROUP, VERSION, "sites")
        return {item["metadata"]["name"] for item in listed["items"]}

    def leftovers(self) -> list[tuple[str, str | None, str]]:
        """(plural, namespace, name) of what the test left."""
        found = [("sites", None, name) for name in self._site_names() - self.sites_before]
        for namespace in sorted(self.namespaces):
            for info in KINDS:
                if info.scope != "Namespaced":
                    continue
                listed = self.objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, info.plural
                )
                found += [(info.plural, namespace, i["metadata"]["name"]) for i in listed["items"]]
        return found

    def _delete(self, plural: str, namespace: str | None, name: str) -> None:
        try:
            if namespace is None:
                self.objects.delete_cluster_custom_object(GROUP, VERSION, plural, name)
            else:
                self.objects.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name
                )
        except kubernetes.client.exceptions.ApiException as error:
            if error.status != 404:
                raise

    def release(self, *, timeout: float = 240.0, between: Callable[[], object] | None = None):
        """Delete the leftovers and wait while an operator finalizes the namespaced ones.

        Sites are deleted after them but not waited for: a Site whose RSEs still hold rules
        (an orphaned custodial copy) stays, by design, until `sweep` lets it go.
        """

        def namespaced() -> list[tuple[str, str | None, str]]:
            return [item for item in self.leftovers() if item[1] is not None]

        for plural, namespace, name in namespaced():
            self._delete(plural, namespace, name)
        try:
            poll(lambda: not namespaced(), timeout=timeout, what="resources left", between=between)
        except TimeoutError as error:
            warnings.warn(f"cleanup: {error}; their finalizers are dropped", stacklevel=2)
        for plural, namespace, name in self.leftovers():
            self._delete(plural, namespace, name)

    def sweep(self) -> None:
        """Delete what is left and drop Steward's finalizers from it."""
        for plural, namespace, name in self.leftovers():
            self._delete(plural, namespace, name)
            patch = {"metadata": {"finalizers": None}}
            try:
                if namespace is None:
                    self.objects.patch_cluster_custom_object(GROUP, VERSION, plural, name, patch)
                else:
                    self.objects.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, name, patch
                    )
            except kubernetes.client.exceptions.ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture(autouse=True)
def janitor(request: pytest.FixtureRequest) -> Iterator[Janitor | None]:
    """For every test that uses the control plane: clean up what it left (see `Janitor`)."""
    if "control_plane" not in request.fixturenames:
        yield None
        return
    cleaner = Janitor(request.getfixturevalue("kube_api"))
    yield cleaner
    cleaner.sweep()
