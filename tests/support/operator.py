"""The real operator process (``steward operator``) against the real control plane and Rucio.

End-to-end tests run the operator exactly as it is deployed (`OperatorProcess`); these fixtures
give it a fresh audit database and the test stack's settings, and read its resources back.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from steward.constants import GROUP, VERSION
from steward.services.checkpoint import SigningKey
from steward.services.ownership import owner_tag
from steward.storage.database import make_engine, upgrade
from steward.storage.files import write_private
from steward.storage.kubernetes import cluster_identity
from steward.testing.operatorprocess import OperatorProcess

STEWARD = Path(sys.executable).with_name("steward")
OPERATOR_SITE = "ncsa"
"""The site the test operator runs Campaigns for (``STEWARD_SITE``)."""


def base_operator_env(
    kubeconfig: Path, rucio_server: Any, database_url: str, directory: Path
) -> dict[str, str]:
    """What every operator process of the tests needs: its cluster, the session's Rucio (the
    password in a private file under DIRECTORY) and a migrated audit database."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    settings = rucio_server.settings()
    password_file = directory / "rucio-password"
    write_private(password_file, settings.rucio_secret().get_secret_value())
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "STEWARD_RUCIO_HOST": str(settings.rucio_host),
        "STEWARD_RUCIO_ACCOUNT": settings.rucio_account,
        "STEWARD_RUCIO_USERNAME": str(settings.rucio_username),
        "STEWARD_RUCIO_PASSWORD_FILE": str(password_file),
        "STEWARD_RUCIO_CALLS_PER_SECOND": "1000",
        "STEWARD_DATABASE_URL": database_url,
    }


@pytest.fixture
def operator_env(control_plane, rucio_server, tmp_path, database_url, namespace) -> dict[str, str]:
    """Environment of an operator process: cluster, Rucio, a fresh audit database (SQLite, or
    PostgreSQL with STEWARD_TEST_DATABASE=postgresql), a signing key for its checkpoints, and
    the test's namespace as its own (where it keeps its checkpoint ConfigMaps)."""
    key_file = tmp_path / "audit-signing-key.pem"
    write_private(key_file, SigningKey.generate().pem())
    return {
        **base_operator_env(control_plane.kubeconfig, rucio_server, database_url, tmp_path),
        "STEWARD_REFRESH_INTERVAL": "3",
        "STEWARD_SITE": OPERATOR_SITE,
        "STEWARD_CAMPAIGN_INTERVAL": "1",
        "STEWARD_OPERATOR_NAMESPACE": namespace,
        "STEWARD_AUDIT_SIGNING_KEY_FILE": str(key_file),
    }


@pytest.fixture
def steward_operator(operator_env, tmp_path, janitor, rucio_server) -> Iterator[OperatorProcess]:
    """A running operator; stopped after the test, once it released what the test left.

    Before it stops, the test's resources and Sites are deleted and the operator's finalizers
    carry out their deletion policies (judge-cleaner passes remove the Rucio rules they
    delete), so nothing is left for the operator of a later test to find.
    """
    process = OperatorProcess(operator_env, tmp_path / "operator.log")
    process.start(timeout=60)
    yield process
    try:
        if process.healthy():
            janitor.release(between=lambda: rucio_server.daemons.run("judge-cleaner"))
    finally:
        process.stop()


class CustomObjects:
    """Steward resources through the kubernetes client, for tests."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = kubernetes.client.CustomObjectsApi(api)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"].get("namespace")
        if namespace:
            return self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        return self.api.create_cluster_custom_object(GROUP, VERSION, plural, body)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            if namespace:
                return self.api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name
                )
            return self.api.get_cluster_custom_object(GROUP, VERSION, plural, name)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, plural: str, name: str, namespace: str | None, body: dict[str, Any]) -> None:
        if namespace:
            self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)
        else:
            self.api.patch_cluster_custom_object(GROUP, VERSION, plural, name, body)

    def delete(self, plural: str, name: str, namespace: str | None = None) -> None:
        if namespace:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        else:
            self.api.delete_cluster_custom_object(GROUP, VERSION, plural, name)


@pytest.fixture
def custom_objects(kube_api) -> CustomObjects:
    return CustomObjects(kube_api)


@pytest.fixture(scope="session")
def cluster_id(kube_api) -> str:
    """The cluster's identity as the operator reads it (the kube-system namespace's UID)."""
    return cluster_identity(kube_api)


def owner_tag_of(body: dict[str, Any], cluster: str) -> str:
    """The owner tag the operator writes on the Rucio rules of a created resource."""
    return owner_tag(cluster, body["metadata"]["uid"])


def condition_of(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition of ``type_`` in a resource's status."""
    for item in ((body or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return item
    return None
