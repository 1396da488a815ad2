"""A closed campaign's staging rules leave through the deletion gate (real API server, Rucio).

The campaign is driven one pass at a time (`support.campaigns`); the cluster facts the
operator's indexes would hold (a Site's freeze, a RetentionPolicy's legal hold) are handed to
the service as the handler does, and changed between passes as an index would.
"""

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.campaign import Campaign
from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from steward.services.campaign.base import iso
from steward.services.campaign.data import STAGING_KEPT
from steward.services.deletion import ABANDONED, DONE, INTENT, DeletionGate
from steward.services.protections import ClusterFacts
from steward.storage.audit import AuditFilter
from steward.storage.ledger import LedgerStore
from support.campaigns import campaign_body
from support.clock import StepClock
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

PROTOCOL = {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/d"}


def _frozen_site() -> Site:
    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": f"frozen-{secrets.token_hex(3)}"},
            "spec": {
                "facility": "NCSA",
                "rses": [{"name": "NCSA_DISK", "type": "DISK", "protocols": [PROTOCOL]}],
                "deletionFreeze": {"reason": "restore in progress"},
            },
        }
    )


def _hold(namespace: str, did: str) -> RetentionPolicy:
    return RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "hold", "namespace": namespace},
            "spec": {"selector": {"dids": [did]}, "lifetime": "3650d", "holds": [did]},
        }
    )


def _degraded(status):
    return next(c for c in status["conditions"] if c["type"] == "Degraded")


def _ledger_row(service, uid):
    with service.sessions() as session:
        record = LedgerStore(session).campaign(uid)
    assert record is not None
    return record


def _expiring_within_a_day(rules):
    now = datetime.now(UTC)
    return {
        r.did
        for r in rules
        if r.expires_at is not None and r.expires_at - now <= timedelta(days=1, minutes=1)
    }


def test_a_terminated_campaign_releases_staging_only_once_freeze_and_hold_are_lifted(
    campaign_harness, rucio_data, rucio_storage, namespace
):
    datasets = sorted(rucio_data.dataset(rse="NCSA_TAPE") for _ in range(3))
    body = campaign_body(
        "released",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        coverage={"query": {"dids": datasets}},
        inputs={"prestage": True, "destination": "NCSA_DISK", "lifetime": "10d"},
    )
    service = campaign_harness.service
    driven = campaign_harness.start(body)
    driven.step()
    tag = campaign_harness.service_tag(driven.uid)

    def staging():
        return [r for r in rucio_storage.list_rules(comment=tag) if r.did in datasets]

    assert len(staging()) == 3

    # A freeze on the staging RSE keeps every rule: the campaign still ends, Degraded says why.
    service.facts = ClusterFacts(sites=[_frozen_site()])
    driven.patch_spec({"desiredState": "Terminated"})
    status = driven.step()
    assert status["phase"] == "Terminated"
    assert status["staging"]["released"] is False
    degraded = _degraded(status)
    assert (degraded["status"], degraded["reason"]) == ("True", STAGING_KEPT)
    assert "frozen at NCSA_DISK" in degraded["message"]
    assert "restore in progress" in degraded["message"]
    assert _expiring_within_a_day(staging()) == set()

    # The freeze lifted, a legal hold on one input keeps its rule; the others get a day.
    held = datasets[0]
    service.facts = ClusterFacts(policies=[_hold(namespace, held)])
    status = driven.step()
    assert status["staging"]["released"] is False
    degraded = _degraded(status)
    assert degraded["reason"] == STAGING_KEPT
    assert "LegalHold=1" in degraded["message"]
    assert held in degraded["message"]
    assert _expiring_within_a_day(staging()) == set(datasets[1:])
    ref = AuditFilter(kind="Campaign", namespace=namespace, name="released")
    rows = service.audit.query(ref)
    intents = [r for r in rows if r.action == INTENT]
    assert len(intents) == 1
    intent = json.loads(intents[0].after)
    assert intent["operation"] == "Expire"
    assert intent["graceSeconds"] == 86400
    assert sorted(rule["did"] for rule in intent["rules"]) == datasets[1:]
    [done] = [r for r in rows if r.action == DONE]
    assert (done.target, done.result) == (intents[0].target, "success")
    assert len(json.loads(done.after)["removed"]) == 2
    assert rows.index(intents[0]) < rows.index(done)

    # The hold lifted, the next pass releases the last rule and the release is done.
    service.facts = ClusterFacts()
    status = driven.step()
    assert status["staging"]["released"] is True
    assert _degraded(status)["status"] == "False"
    assert _expiring_within_a_day(staging()) == set(datasets)
    rows = service.audit.query(ref)
    assert [r.action for r in rows if r.action in {INTENT, DONE}] == [INTENT, DONE] * 2
    last = json.loads(next(r for r in reversed(rows) if r.action == INTENT).after)
    assert [rule["did"] for rule in last["rules"]] == [held]
    # Released once: a further pass proposes nothing and writes no intent.
    driven.step()
    assert len([r for r in service.audit.query(ref) if r.action == INTENT]) == 2


def test_another_running_campaign_on_the_same_inputs_keeps_the_staging_rules(
    campaign_harness, rucio_data, rucio_storage, namespace
):
    datasets = sorted(rucio_data.dataset(rse="NCSA_TAPE") for _ in range(2))
    body = campaign_body(
        "first",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        coverage={"query": {"dids": datasets}},
        inputs={"prestage": True, "destination": "NCSA_DISK", "lifetime": "10d"},
    )
    service = campaign_harness.service
    driven = campaign_harness.start(body)
    driven.step()
    other = campaign_body(
        "second",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        coverage={"query": {"dids": datasets}},
    )
    other["metadata"]["uid"] = "uid-of-second"
    first = Campaign.model_validate({k: v for k, v in driven.body().items() if k != "status"})
    service.facts = ClusterFacts(campaigns=[first, Campaign.model_validate(other)])
    driven.patch_spec({"desiredState": "Terminated"})
    status = driven.step()
    assert status["phase"] == "Terminated"
    degraded = _degraded(status)
    assert degraded["reason"] == STAGING_KEPT
    # The campaign itself is not what keeps them: it ended (its own index entry may lag).
    assert "CampaignInput=2" in degraded["message"]
    assert "second" in degraded["message"]
    tag = campaign_harness.service_tag(driven.uid)
    rules = [r for r in rucio_storage.list_rules(comment=tag) if r.did in datasets]
    assert _expiring_within_a_day(rules) == set()


def test_a_release_killed_mid_batch_is_recovered_and_finished(
    campaign_harness, rucio_data, rucio_storage, namespace
):
    datasets = sorted(rucio_data.dataset(rse="NCSA_TAPE") for _ in range(3))
    body = campaign_body(
        "killed",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        coverage={"query": {"dids": datasets}},
        inputs={"prestage": True, "destination": "NCSA_DISK", "lifetime": "10d"},
    )
    service = campaign_harness.service
    driven = campaign_harness.start(body)
    driven.step()
    tag = campaign_harness.service_tag(driven.uid)
    rules = sorted(r.id for r in rucio_storage.list_rules(comment=tag) if r.did in datasets)

    class Killed(BaseException):
        """The operator process dies (SIGKILL) in the middle of a batch."""

    class DyingGate(DeletionGate):
        def _remove(self, candidate, operation, grace):
            if candidate.key == rules[1]:
                raise Killed
            return super()._remove(candidate, operation, grace)

    service.gate = DyingGate(rucio_storage, service.audit)
    driven.patch_spec({"desiredState": "Terminated"})
    with pytest.raises(Killed):
        driven.step()
    ref = AuditFilter(kind="Campaign", namespace=namespace, name="killed")
    assert [r.action for r in service.audit.query(ref) if r.action.startswith("deletion.")] == [
        INTENT
    ]
    # Restarted: the open intent is closed first. The rule given its day before the kill
    # counts as done (its expiry is within the intent's grace); the others are judged again.
    service.gate = None
    status = driven.step()
    assert status["staging"]["released"] is True
    rows = [r for r in service.audit.query(ref) if r.action.startswith("deletion.")]
    assert [r.action for r in rows] == [INTENT, ABANDONED, INTENT, DONE]
    recovered = json.loads(rows[1].after)
    assert (recovered["removed"], sorted(recovered["abandoned"])) == ([rules[0]], rules[1:])
    assert sorted(r["id"] for r in json.loads(rows[2].after)["rules"]) == rules[1:]
    remaining = [rucio_storage.get_rule(r) for r in rules]
    assert _expiring_within_a_day(remaining) == set(datasets)


def test_a_succeeded_campaign_nobody_closes_releases_staging_after_release_after(
    campaign_harness, rucio_data, rucio_server, rucio_storage, namespace
):
    datasets = sorted(rucio_data.dataset(rse="NCSA_TAPE") for _ in range(2))
    body = campaign_body(
        "settled",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        coverage={"query": {"dids": datasets}},
        inputs={
            "prestage": True,
            "destination": "NCSA_DISK",
            "lifetime": "10d",
            "releaseAfter": "2d",
        },
    )
    service = campaign_harness.service
    clock = StepClock(datetime.now(UTC))
    service.clock = clock
    driven = campaign_harness.start(body)
    until(
        "the inputs to be staged",
        lambda: driven.step().get("staging", {}).get("ok") == 2,
        between=rucio_server.daemons.converge,
        timeout=120,
    )
    status = driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    uid = driven.uid
    tag = campaign_harness.service_tag(uid)

    def staging():
        return [r for r in rucio_storage.list_rules(comment=tag) if r.did in datasets]

    succeeded_at = _ledger_row(service, uid).succeeded_at
    assert succeeded_at is not None
    assert status["staging"]["released"] is False
    assert status["staging"]["releaseAt"] == iso(succeeded_at + timedelta(days=2))
    assert _expiring_within_a_day(staging()) == set()

    # Within the grace nothing is released: the results can still be looked at.
    clock.now += timedelta(days=2) - timedelta(hours=1)
    status = driven.step()
    assert (status["phase"], status["staging"]["released"]) == ("Succeeded", False)
    assert _expiring_within_a_day(staging()) == set()

    # After it, the release goes through the deletion gate: a freeze keeps the rules...
    clock.now += timedelta(hours=2)
    service.facts = ClusterFacts(sites=[_frozen_site()])
    status = driven.step()
    assert status["phase"] == "Succeeded"
    assert status["staging"]["released"] is False
    assert _degraded(status)["reason"] == STAGING_KEPT
    assert _expiring_within_a_day(staging()) == set()

    # ...and once it is lifted they get their day, audited as a release by the campaign.
    service.facts = ClusterFacts()
    status = driven.step()
    assert status["phase"] == "Succeeded"
    assert status["staging"]["released"] is True
    assert "releaseAt" not in status["staging"]
    assert _expiring_within_a_day(staging()) == set(datasets)
    ref = AuditFilter(kind="Campaign", namespace=namespace, name="settled")
    rows = service.audit.query(ref)
    [intent] = [r for r in rows if r.action == INTENT]
    after = json.loads(intent.after)
    assert (after["operation"], after["graceSeconds"]) == ("Expire", 86400)
    assert sorted(rule["did"] for rule in after["rules"]) == datasets
    assert [r.result for r in rows if r.action == DONE] == ["success"]

    # A step added later makes the campaign run again; its success starts a new grace.
    driven.patch_spec(
        {
            "steps": [
                *body["spec"]["steps"],
                {"name": "two", "dependsOn": ["one"], "pipeline": "p.yaml#two"},
            ]
        }
    )
    status = driven.step()
    record = _ledger_row(service, uid)
    assert (record.succeeded_at, record.staging_released) == (None, False)
    status = driven.until("the campaign to succeed again", lambda s: s["phase"] == "Succeeded")
    assert status["staging"]["releaseAt"] > iso(succeeded_at + timedelta(days=2))
