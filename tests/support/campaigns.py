"""Campaigns for tests: documents, the service wired to the real servers, and what ran.

Service-level tests call `CampaignService.reconcile` directly, one pass at a time, against the
session's real API server (whose controller manager runs the Jobs and kwok the pods) and real
Rucio; the Campaign object exists in the cluster so that its Jobs have a real owner.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest

from steward.models.campaign import Campaign, parse_indexes
from steward.services.audit import AuditService, ResourceRef
from steward.services.campaign import CampaignService
from steward.services.ledger import LedgerService
from steward.services.ownership import owner_tag
from steward.services.protections import ClusterFacts
from steward.storage.batch import LABEL_CAMPAIGN_UID, BatchStorage
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.kubernetes import KubeResources
from support.waiting import until

ANNOTATION_INVOCATIONS = "steward.lsst.io/invocations"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def campaign_body(
    name: str,
    namespace: str,
    *,
    invocations: int,
    steps: list[dict[str, Any]],
    scope: str,
    **spec: Any,
) -> dict[str, Any]:
    """A Campaign with ``invocations`` explicit data ids, outputs registered at NCSA_DISK."""
    body: dict[str, Any] = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "site": "ncsa",
            "priority": "normal",
            "image": "example.org/pipelines:test",
            "steps": [
                {"pipeline": f"pipelines/test.yaml#{s['name']}", "parallelism": 10, **s}
                for s in steps
            ],
            "coverage": {
                "dataIds": [{"visit": 1000 + i, "detector": i % 9} for i in range(invocations)]
            },
            "inputs": {"prestage": False},
            "outputs": {"scope": scope, "rse": "NCSA_DISK"},
        },
    }
    body["spec"].update(spec)
    return body


@dataclass
class Driven:
    """A campaign driven by direct service calls."""

    service: CampaignService
    api: kubernetes.client.CustomObjectsApi
    namespace: str
    name: str
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(
            "steward.lsst.io", "v1alpha1", self.namespace, "campaigns", self.name
        )

    def ref(self, body: dict[str, Any]) -> ResourceRef:
        meta = body["metadata"]
        return ResourceRef(
            kind="Campaign",
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=meta.get("generation"),
        )

    @property
    def uid(self) -> str:
        return self.body()["metadata"]["uid"]

    def step(self) -> dict[str, Any]:
        """One pass; returns the new status."""
        body = self.body()
        campaign = Campaign.model_validate({k: v for k, v in body.items() if k != "status"})
        outcome = self.service.reconcile(campaign, self.ref(body), self.status)
        self.status = outcome.status
        self.events.extend(outcome.events)
        return self.status

    def until(
        self, what: str, probe: Callable[[dict[str, Any]], Any], *, timeout: float = 120
    ) -> dict[str, Any]:
        """Run passes until ``probe(status)`` is truthy; return that status."""

        def check() -> dict[str, Any] | None:
            status = self.step()
            return status if probe(status) else None

        return until(what, check, timeout=timeout)

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(
            "steward.lsst.io", "v1alpha1", self.namespace, "campaigns", self.name, {"spec": spec}
        )

    def step_status(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status["steps"] if s["name"] == name)


@dataclass
class CampaignHarness:
    """The campaign service on the real servers, and readers of what happened."""

    service: CampaignService
    ledger: LedgerService
    kube: kubernetes.client.ApiClient
    namespace: str

    def start(self, body: dict[str, Any]) -> Driven:
        api = kubernetes.client.CustomObjectsApi(self.kube)
        api.create_namespaced_custom_object(
            "steward.lsst.io", "v1alpha1", self.namespace, "campaigns", body
        )
        return Driven(self.service, api, self.namespace, body["metadata"]["name"])

    def service_tag(self, uid: str) -> str:
        """The owner tag of the campaign's Rucio rules."""
        return owner_tag(self.service.cluster_id, uid)

    def pods(self, uid: str) -> list[dict[str, Any]]:
        core = kubernetes.client.CoreV1Api(self.kube)
        return core.list_namespaced_pod(
            self.namespace, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
        ).to_dict()["items"]

    def jobs(self, uid: str) -> list[Any]:
        batch = kubernetes.client.BatchV1Api(self.kube)
        return batch.list_namespaced_job(
            self.namespace, label_selector=f"{LABEL_CAMPAIGN_UID}={uid}"
        ).items


def invocation_of(pod: dict[str, Any]) -> int:
    """The campaign invocation a pod (as the client's ``to_dict`` gives it) runs."""
    annotations = pod["metadata"]["annotations"]
    return parse_indexes(annotations[ANNOTATION_INVOCATIONS])[int(annotations[COMPLETION_INDEX])]


def active_per_invocation(pods: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """Pods not ended, by (step, invocation)."""
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for pod in pods:
        if pod["status"]["phase"] in {"Pending", "Running"}:
            step = pod["metadata"]["labels"]["steward.lsst.io/step"]
            counts[step, invocation_of(pod)] += 1
    return counts


@pytest.fixture
def campaign_harness(kube_api, rucio_storage, database_url, namespace) -> Iterator[CampaignHarness]:
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    batch = BatchStorage(kube_api)
    service = CampaignService(
        batch=batch,
        resources=KubeResources(kube_api),
        rucio=rucio_storage,
        sessions=sessions,
        audit=AuditService(sessions),
        cluster_id=f"test-{secrets.token_hex(4)}",
        actor="test",
        # As the operator judges a release: with what its ledger records campaigns reading.
        facts=ClusterFacts(ledger=LedgerService(sessions)),
    )
    yield CampaignHarness(service, LedgerService(sessions), kube_api, namespace)
    batch.close()
    engine.dispose()
