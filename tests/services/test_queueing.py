"""Rendering Kueue objects from Sites, and reading Workloads: pure functions, no server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from steward.exceptions import PermanentError
from steward.models.campaign import Priority
from steward.models.common import LocatedValueError
from steward.services.queueing import (
    PRIORITY_LABEL,
    QUEUE_LABEL,
    job_labels,
    multisite_name,
    render_multisite,
    render_priority_classes,
    render_site,
    resolve_queue,
    workload_state,
)
from steward.testing.kueue import batch_site


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_a_site_renders_a_flavor_per_pool_and_a_cluster_queue_per_queue() -> None:
    site = batch_site(
        "ncsa",
        {"prod": {"cpu": "512", "memory": "2Ti"}, "scratch": {"cpu": "64", "memory": "256Gi"}},
        weights={"prod": 2.0, "scratch": 0.5},
    )

    objects = render_site(site)

    flavors = _by_kind(objects, "ResourceFlavor")
    assert flavors == {
        "ncsa-batch": {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {
                "name": "ncsa-batch",
                "labels": {
                    "app.kubernetes.io/managed-by": "steward",
                    "steward.lsst.io/site": "ncsa",
                },
            },
            "spec": {"nodeLabels": {"pool": "batch"}},
        }
    }
    queues = _by_kind(objects, "ClusterQueue")
    assert sorted(queues) == ["ncsa-prod", "ncsa-scratch"]
    prod = queues["ncsa-prod"]["spec"]
    assert prod["cohortName"] == "ncsa"  # the site's name when no cohort is given
    assert prod["resourceGroups"] == [
        {
            "coveredResources": ["cpu", "memory"],
            "flavors": [
                {
                    "name": "ncsa-batch",
                    "resources": [
                        {"name": "cpu", "nominalQuota": "512"},
                        {"name": "memory", "nominalQuota": "2Ti"},
                    ],
                }
            ],
        }
    ]
    assert prod["preemption"]["withinClusterQueue"] == "LowerPriority"
    assert prod["fairSharing"] == {"weight": "2"}
    assert queues["ncsa-scratch"]["spec"]["fairSharing"] == {"weight": "500m"}


def test_borrowing_and_lending_limits_are_passed_per_resource() -> None:
    site = batch_site("in2p3", {"prod": {"cpu": "8", "memory": "32Gi"}}, cohort="facility")
    assert site.spec.batch is not None
    quota = site.spec.batch.queues[0].quotas[0]
    quota.borrowing_limit = {"cpu": "4"}
    quota.lending_limit = {"memory": "16Gi"}

    queue = _by_kind(render_site(site), "ClusterQueue")["in2p3-prod"]["spec"]

    assert queue["cohortName"] == "facility"
    assert queue["resourceGroups"][0]["flavors"][0]["resources"] == [
        {"name": "cpu", "nominalQuota": "8", "borrowingLimit": "4"},
        {"name": "memory", "nominalQuota": "32Gi", "lendingLimit": "16Gi"},
    ]


def test_priority_classes_carry_the_campaign_priority_values() -> None:
    classes = {o["metadata"]["name"]: o["value"] for o in render_priority_classes()}

    assert classes == {
        "steward-campaign-low": Priority.LOW,
        "steward-campaign-normal": Priority.NORMAL,
        "steward-campaign-high": Priority.HIGH,
        "steward-campaign-urgent": Priority.URGENT,
    }


def test_job_labels_name_the_local_queue_and_the_workload_priority_class() -> None:
    assert job_labels("ncsa-prod", "urgent") == {
        QUEUE_LABEL: "ncsa-prod",
        PRIORITY_LABEL: "steward-campaign-urgent",
    }


def test_a_campaign_gets_its_sites_default_queue_unless_it_names_one() -> None:
    site = batch_site(
        "ncsa", {"prod": {"cpu": "1", "memory": "1Gi"}, "dev": {"cpu": "1", "memory": "1Gi"}}
    )
    assert resolve_queue(site, None) == "ncsa-prod"
    assert resolve_queue(site, "dev") == "ncsa-dev"
    with pytest.raises(PermanentError, match=r"queue 'gpu' is not a queue of Site ncsa \(it has"):
        resolve_queue(site, "gpu")


@pytest.mark.parametrize(
    ("batch", "message", "location"),
    [
        (
            {
                "nodePools": [{"name": "a"}],
                "queues": [{"name": "q", "quotas": [{"pool": "b", "cpu": "1", "memory": "1Gi"}]}],
            },
            "quota names node pool 'b', which this site does not declare",
            ("spec", "batch", "queues", 0, "quotas", 0, "pool"),
        ),
        (
            {
                "nodePools": [{"name": "a"}],
                "queues": [
                    {"name": "q", "quotas": [{"pool": "a", "cpu": "1", "memory": "1Gi"}]},
                    {"name": "q", "quotas": [{"pool": "a", "cpu": "1", "memory": "1Gi"}]},
                ],
            },
            "queue 'q' is declared twice",
            ("spec", "batch", "queues", 1, "name"),
        ),
        (
            {
                "nodePools": [{"name": "a"}],
                "defaultQueue": "x",
                "queues": [{"name": "q", "quotas": [{"pool": "a", "cpu": "1", "memory": "1Gi"}]}],
            },
            "default queue 'x' is not one of the site's queues",
            ("spec", "batch", "defaultQueue"),
        ),
        (
            {
                "nodePools": [{"name": "a"}],
                "queues": [
                    {"name": "q", "quotas": [{"pool": "a", "cpu": "lots", "memory": "1Gi"}]}
                ],
            },
            "String should match pattern",
            ("spec", "batch", "queues", 0, "quotas", 0, "cpu"),
        ),
    ],
)
def test_bad_batch_capacity_is_refused_naming_the_field(
    batch: dict[str, Any], message: str, location: tuple[Any, ...]
) -> None:
    body = batch_site("ncsa", {"q": {"cpu": "1", "memory": "1Gi"}}).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    body["spec"]["batch"] = batch

    with pytest.raises(ValidationError) as caught:
        type(batch_site("x", {"q": {"cpu": "1", "memory": "1Gi"}})).model_validate(body)

    error = caught.value.errors()[0]
    assert message in error["msg"]
    located = error.get("ctx", {}).get("error")
    path = tuple(error["loc"]) + (located.path if isinstance(located, LocatedValueError) else ())
    assert path == location


def test_multisite_names_keep_the_order_and_stay_valid_names() -> None:
    assert multisite_name(["ncsa", "in2p3"]) == "sites-ncsa-in2p3"
    assert multisite_name(["in2p3", "ncsa"]) == "sites-in2p3-ncsa"
    long = multisite_name([f"site-number-{i}" for i in range(8)])
    assert len(long) <= 63
    assert long != multisite_name([f"site-number-{i}" for i in reversed(range(8))])


def test_the_manager_queue_has_the_sum_of_the_sites_quotas_and_the_multikueue_check() -> None:
    ncsa = batch_site(
        "ncsa", {"prod": {"cpu": "2", "memory": "8Gi"}}, kubeconfig_secret="ncsa-kubeconfig"
    )
    in2p3 = batch_site(
        "in2p3", {"prod": {"cpu": "500m", "memory": "1Gi"}}, kubeconfig_secret="in2p3-kubeconfig"
    )

    objects = render_multisite([ncsa, in2p3], "drp")

    clusters = _by_kind(objects, "MultiKueueCluster")
    assert clusters["ncsa"]["spec"]["clusterSource"]["kubeConfig"] == {
        "locationType": "Secret",
        "location": "ncsa-kubeconfig",
    }
    assert _by_kind(objects, "MultiKueueConfig")["sites-ncsa-in2p3"]["spec"] == {
        "clusters": ["ncsa", "in2p3"]
    }
    check = _by_kind(objects, "AdmissionCheck")["sites-ncsa-in2p3"]["spec"]
    assert check["controllerName"] == "kueue.x-k8s.io/multikueue"
    queue = _by_kind(objects, "ClusterQueue")["sites-ncsa-in2p3"]["spec"]
    assert queue["admissionChecksStrategy"] == {"admissionChecks": [{"name": "sites-ncsa-in2p3"}]}
    assert queue["resourceGroups"][0]["flavors"][0]["resources"] == [
        {"name": "cpu", "nominalQuota": "2500m"},
        {"name": "memory", "nominalQuota": str(9 * 2**30)},
    ]
    local = _by_kind(objects, "LocalQueue")["sites-ncsa-in2p3"]
    assert local["metadata"]["namespace"] == "drp"
    assert local["spec"] == {"clusterQueue": "sites-ncsa-in2p3"}


def test_a_multisite_queue_needs_a_kubeconfig_for_every_site() -> None:
    ncsa = batch_site(
        "ncsa", {"prod": {"cpu": "2", "memory": "8Gi"}}, kubeconfig_secret="ncsa-kubeconfig"
    )
    in2p3 = batch_site("in2p3", {"prod": {"cpu": "2", "memory": "8Gi"}})

    with pytest.raises(PermanentError, match=r"Site in2p3 names no spec\.batch\.kubeconfigSecret"):
        render_multisite([ncsa, in2p3], "drp")
    with pytest.raises(PermanentError, match="at least two sites"):
        render_multisite([ncsa], "drp")


def _workload(conditions: list[tuple[str, str, str]], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "job-a-1234"},
        "spec": {},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{r} message"}
                for t, s, r in conditions
            ],
            **status,
        },
    }


def test_workload_state_reads_pending_admitted_evicted_and_finished() -> None:
    pending = workload_state(_workload([("QuotaReserved", "False", "Pending")]))
    assert (pending.phase, pending.reason) == ("Pending", "Pending")
    assert pending.message == "Pending message"

    admitted = workload_state(
        _workload(
            [("QuotaReserved", "True", "QuotaReserved"), ("Admitted", "True", "Admitted")],
            clusterName="ncsa",
        )
    )
    assert (admitted.phase, admitted.cluster) == ("Admitted", "ncsa")

    evicted = workload_state(
        _workload(
            [("Evicted", "True", "Preempted"), ("QuotaReserved", "False", "Pending")],
            schedulingStats={"evictions": [{"reason": "Preempted", "count": 2}]},
        )
    )
    assert (evicted.phase, evicted.reason, evicted.evictions) == ("Evicted", "Preempted", 2)

    finished = workload_state(_workload([("Finished", "True", "Succeeded")]))
    assert finished.phase == "Finished"


def test_a_deactivated_workload_reads_inactive() -> None:
    body = _workload([("QuotaReserved", "False", "Pending")])
    body["spec"]["active"] = False

    assert workload_state(body).phase == "Inactive"
