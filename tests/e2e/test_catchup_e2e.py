"""Catch-up archiving through the real operator, API server and Rucio (use case 17).

A ReplicationRule with ``catchUp.after: 1s`` falls behind at once (no transfer runs until the
test runs Rucio's conveyor): the operator raises its rules' priority and the activity's
transfer limit and says so in status, a condition and an Event; once the conveyor has
drained the backlog, both are back to nominal.
"""

import secrets

import kubernetes
import pytest

from support.operator import condition_of, owner_tag_of
from support.rucio import mock_site
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

ACTIVITY = "Data Consolidation"


def test_a_backlog_is_caught_up_and_reported_then_nominal(
    custom_objects, namespace, steward_operator, rucio_server, rucio_storage, rucio_data, kube_api,
    cluster_id,
):  # fmt: skip
    facility = f"CE{secrets.token_hex(3).upper()}"
    rucio_storage.register_site(
        mock_site(
            facility.lower(), facility, {f"{facility}_TAPE": "TAPE", f"{facility}_DISK": "DISK"}
        )
    )
    datasets = [rucio_data.dataset(rse=f"{facility}_TAPE") for _ in range(2)]
    destination = f"site={facility}&type=DISK"
    body = custom_objects.create(
        "replicationrules",
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": "catch-up", "namespace": namespace},
            "spec": {
                "selector": {"dids": datasets},
                "destination": destination,
                "catchUp": {"after": "1s", "backlog": 2, "transfers": 5},
            },
        },
    )
    tag = owner_tag_of(body, cluster_id)

    def status():
        return (custom_objects.get("replicationrules", "catch-up", namespace) or {}).get(
            "status"
        ) or {}

    until(
        "catch-up to start",
        lambda: (status().get("catchUp") or {}).get("active") is True,
        timeout=90,
    )
    raised = status()
    assert raised["catchUp"]["backlog"] == 2
    assert raised["catchUp"]["transfers"] == 10
    assert condition_of({"status": raised}, "CatchingUp")["status"] == "True"
    assert {r.priority for r in rucio_storage.list_rules(comment=tag)} == {4}
    assert rucio_storage.get_transfer_limit(destination, ACTIVITY).max_transfers == 10
    core = kubernetes.client.CoreV1Api(kube_api)
    until(
        "a CatchUpStarted Event",
        lambda: any(
            e.reason == "CatchUpStarted" for e in core.list_namespaced_event(namespace).items
        ),
        timeout=30,
    )

    until(
        "the backlog to drain and catch-up to end",
        lambda: (
            (status().get("catchUp") or {}).get("active") is False
            and condition_of({"status": status()}, "Ready")["status"] == "True"
        ),
        timeout=120,
        between=lambda: rucio_server.daemons.converge(scope=rucio_data.scope),
    )
    assert status()["catchUp"]["transfers"] == 5
    assert condition_of({"status": status()}, "CatchingUp")["status"] == "False"
    assert {r.priority for r in rucio_storage.list_rules(comment=tag)} == {3}
    assert rucio_storage.get_transfer_limit(destination, ACTIVITY).max_transfers == 5
