"""What a plan takes away from the protections, and the facts it leaves: pure, no servers."""

from datetime import UTC, datetime, timedelta

from steward.models.campaign import Campaign
from steward.models.oods import OODSCache
from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from steward.services.deletion import Protections
from steward.services.protection_changes import (
    SAMPLE,
    PlannedChange,
    ProtectionLoss,
    planned_facts,
    protection_losses,
)
from steward.services.protections import ClusterFacts, protections_from
from support.samples import SITE

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
EARLIER = NOW - timedelta(days=1)
NS = "facility"


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _policy(name, holds=(), locks=(), status=None, dids=("raw:selected",)):
    body = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "RetentionPolicy",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {
            "selector": {"dids": list(dids)},
            "lifetime": "30d",
            "holds": list(holds),
            "locks": list(locks),
        },
    }
    if status is not None:
        body["status"] = status
    return body


def _lock(name, mode, until, dids):
    return {"name": name, "mode": mode, "until": _stamp(until), "dids": list(dids)}


def _cache(name, pins=()):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "OODSCache",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "rse": "BASE_OODS",
            "scope": "raw",
            "instruments": ["LSSTCam"],
            "window": "30d",
            "capacity": "1TB",
            "pins": list(pins),
        },
    }


def _pin(dids=None, until=None, match=None):
    selector = {"dids": list(dids)} if dids is not None else {"scope": "raw", "match": match}
    pin = {"selector": selector, "reason": "calibrations"}
    if until is not None:
        pin["until"] = _stamp(until)
    return pin


def _facts(*bodies) -> ClusterFacts:
    policies = [RetentionPolicy.model_validate(b) for b in bodies if b["kind"] == "RetentionPolicy"]
    caches = [OODSCache.model_validate(b) for b in bodies if b["kind"] == "OODSCache"]
    return ClusterFacts(policies=policies, caches=caches)


def _protections(facts: ClusterFacts) -> Protections:
    return protections_from(
        policies=facts.policies, caches=facts.caches, sites=facts.sites, now=NOW
    )


# -- protection_losses --------------------------------------------------------------------------


def test_deleting_a_policy_releases_its_holds_and_governance_locks():
    live = _policy(
        "legal",
        holds=["raw:b", "raw:a"],
        locks=[
            _lock("audit", "Governance", LATER, ["raw:c"]),
            _lock("ended", "Governance", EARLIER, ["raw:d"]),
        ],
    )
    losses = protection_losses("RetentionPolicy", live, None, now=NOW)
    assert losses == [
        ProtectionLoss("LegalHold", "released", f"RetentionPolicy/{NS}/legal", ("raw:a", "raw:b")),
        ProtectionLoss("GovernanceLock", "removed", f"RetentionPolicy/{NS}/legal", ("raw:c",)),
    ]
    assert losses[0].line() == "legal hold released on 2 DIDs: raw:a, raw:b"
    assert losses[1].line() == "governance lock removed from 1 DIDs: raw:c"
    assert losses[0].to_json() == {
        "protection": "LegalHold",
        "change": "released",
        "by": f"RetentionPolicy/{NS}/legal",
        "count": 2,
        "dids": ["raw:a", "raw:b"],
        "note": "",
    }


def test_an_edit_loses_only_what_it_removes_or_shortens():
    locks = [_lock("audit", "Governance", LATER, ["raw:c", "raw:d"])]
    live = _policy("legal", holds=["raw:a", "raw:b"], locks=locks)
    shorter = [_lock("audit", "Governance", NOW + timedelta(days=1), ["raw:c"])]
    desired = _policy("legal", holds=["raw:a", "raw:new"], locks=shorter)
    losses = protection_losses("RetentionPolicy", live, desired, now=NOW)
    assert [(loss.protection, loss.change, loss.dids) for loss in losses] == [
        ("LegalHold", "released", ("raw:b",)),
        ("GovernanceLock", "removed", ("raw:d",)),
        ("GovernanceLock", "shortened", ("raw:c",)),
    ]
    assert protection_losses("RetentionPolicy", live, live, now=NOW) == []
    assert protection_losses("RetentionPolicy", None, desired, now=NOW) == []


def test_compliance_locks_are_never_lost_and_a_deletion_waits_for_them():
    locks = [_lock("sec", "Compliance", LATER, ["raw:c"])]
    live = _policy("legal", holds=["raw:a"], locks=locks)
    (loss,) = protection_losses("RetentionPolicy", live, None, now=NOW)
    assert loss.protection == "LegalHold"
    assert loss.line() == (
        "legal hold released on 1 DIDs: raw:a (once the deletion completes: it waits for "
        f"Compliance locks sec until {_stamp(LATER)})"
    )
    ended = _policy("legal", holds=["raw:a"], locks=[_lock("sec", "Compliance", EARLIER, ["x:y"])])
    assert protection_losses("RetentionPolicy", ended, None, now=NOW)[0].note == ""


def test_a_long_list_names_a_sample_and_json_every_did():
    dids = [f"raw:d{index:03}" for index in range(SAMPLE + 5)]
    (loss,) = protection_losses("RetentionPolicy", _policy("legal", holds=dids), None, now=NOW)
    assert loss.line().endswith(f"{dids[SAMPLE - 1]} ... (5 more)")
    assert loss.to_json()["dids"] == dids
    assert loss.to_json()["count"] == SAMPLE + 5


def test_removing_or_shortening_pins_and_deleting_a_cache_lose_them():
    live = _cache(
        "oods",
        [
            _pin(["raw:a", "raw:b"]),
            _pin(["raw:c"], until=LATER),
            _pin(["raw:old"], until=EARLIER),
            _pin(match={"datatype": "flat"}),
        ],
    )
    desired = _cache("oods", [_pin(["raw:a"]), _pin(["raw:c"], until=NOW + timedelta(hours=1))])
    losses = protection_losses("OODSCache", live, desired, now=NOW)
    assert [(loss.change, loss.dids) for loss in losses] == [
        ("removed", ("raw:b",)),
        ("shortened", ("raw:c",)),
        ("removed", ()),
    ]
    assert losses[0].line() == "pin removed from 1 DIDs: raw:b (at BASE_OODS)"
    assert "matching {'datatype': 'flat'}" in losses[2].line()
    deleted = protection_losses("OODSCache", live, None, now=NOW)
    assert [loss.dids for loss in deleted] == [("raw:a", "raw:b", "raw:c"), ()]
    assert protection_losses("OODSCache", live, live, now=NOW) == []
    assert protection_losses("Site", live, None, now=NOW) == []


# -- planned_facts ------------------------------------------------------------------------------


def test_a_deleted_policy_stops_protecting_and_others_stay_as_live():
    legal = _policy("legal", holds=["raw:a"])
    other = _policy("other", holds=["raw:b"])
    live = _facts(legal, other)
    planned = planned_facts(live, [PlannedChange("RetentionPolicy", None, legal)])
    assert [p.metadata.name for p in planned.policies] == ["other"]
    assert _protections(live).legal_holds.keys() == {"raw:a", "raw:b"}
    assert _protections(planned).legal_holds == {"raw:b": f"RetentionPolicy/{NS}/other"}


def test_changed_and_new_resources_protect_as_their_desired_documents():
    legal = _policy("legal", holds=["raw:a"])
    cache = _cache("oods", [_pin(["raw:p"])])
    live = _facts(legal, cache)
    changes = [
        PlannedChange("RetentionPolicy", _policy("legal", holds=["raw:z"]), legal),
        PlannedChange("RetentionPolicy", _policy("fresh", holds=["raw:f"]), None),
        PlannedChange("OODSCache", _cache("oods", []), cache),
        PlannedChange("ReplicationRule", {"kind": "ReplicationRule"}, None),
    ]
    protections = _protections(planned_facts(live, changes))
    assert set(protections.legal_holds) == {"raw:z", "raw:f"}
    assert protections.pins == {}
    uids = {p.metadata.name: p.metadata.uid for p in planned_facts(live, changes).policies}
    assert uids == {"legal": "uid-legal", "fresh": "uid-fresh"}  # the live UID is kept


def test_remembered_compliance_locks_outlive_an_edit_and_a_deletion():
    remembered = {"complianceLocks": [_lock("sec", "Compliance", LATER, ["raw:c"])]}
    legal = _policy("legal", holds=["raw:a"], status=remembered)
    live = _facts(legal)
    # Dropped from the spec (behind the API server's back): the status keeps it in force.
    edited = planned_facts(live, [PlannedChange("RetentionPolicy", _policy("legal"), legal)])
    assert _protections(edited).compliance_locks == {"raw:c": LATER}
    deleted = planned_facts(live, [PlannedChange("RetentionPolicy", None, legal)])
    protections = _protections(deleted)
    assert protections.compliance_locks == {"raw:c": LATER}
    assert protections.legal_holds == {}


def test_sites_and_campaigns_are_planned_too_and_the_freeze_stays():
    site = {**SITE, "spec": {**SITE["spec"], "deletionFreeze": {"reason": "migration"}}}
    campaign = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": "drp", "namespace": NS},
        "spec": {
            "site": "ncsa",
            "image": "example.org/pipelines:test",
            "steps": [{"name": "isr", "pipeline": "pipelines/drp.yaml#isr"}],
            "coverage": {"query": {"dids": ["raw:input"]}},
            "outputs": {"scope": "user.test"},
        },
    }
    live = ClusterFacts(
        sites=[Site.model_validate(site)],
        campaigns=[Campaign.model_validate(campaign)],
        freeze="operator freeze",
    )
    thawed = {**site, "spec": {k: v for k, v in site["spec"].items() if k != "deletionFreeze"}}
    planned = planned_facts(
        live,
        [PlannedChange("Site", thawed, site), PlannedChange("Campaign", None, campaign)],
    )
    assert planned.campaigns == ()
    assert _protections(planned).frozen_rses == {}
    assert _protections(live).frozen_rses == {"NCSA_TAPE": "Site/ncsa: migration"}
    assert planned.freeze == "operator freeze"


def test_a_status_the_models_refuse_does_not_hide_the_spec():
    broken = _policy("legal", holds=["raw:a"], status={"complianceLocks": "not a list"})
    (loss,) = protection_losses("RetentionPolicy", broken, None, now=NOW)
    assert loss.dids == ("raw:a",)
    kept = planned_facts(ClusterFacts(), [PlannedChange("RetentionPolicy", broken, broken)])
    assert _protections(kept).legal_holds == {"raw:a": f"RetentionPolicy/{NS}/legal"}
