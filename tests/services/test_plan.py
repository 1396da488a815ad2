"""The Rucio side of a plan, against the real Rucio server: rules, files and bytes per RSE.

ReplicationRules place and release data; Campaigns stage their inputs and let those staging
rules expire when they end.

Each test's data lives in its own scope (`rucio_data`); the datasets' files are 1000 and 1001
bytes, so every volume below is exact.
"""

from datetime import timedelta

import pytest

from steward.models.campaign import Campaign
from steward.models.replication import ReplicationRule
from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from steward.services.audit import ResourceRef
from steward.services.gitops import Action, Change
from steward.services.ownership import owner_tag
from steward.services.plan import (
    CampaignPreview,
    ReplicationPreview,
    RetentionPreview,
    RucioPlanner,
    RucioStatus,
    Volume,
)
from steward.services.protections import ClusterFacts
from steward.services.replication import ReplicationService
from steward.storage.kubernetes import ResourceKey
from steward.storage.rucio import RetryPolicy, RucioStorage, RuleSpec

pytestmark = pytest.mark.rucio

NAMESPACE = "steward"
CLUSTER = "plan-test-cluster"
TWO_FILES = Volume(2, 2001)


@pytest.fixture
def service(rucio_storage, audit_service):
    return ReplicationService(rucio=rucio_storage, audit=audit_service, cluster_id=CLUSTER)


@pytest.fixture
def preview(rucio_storage):
    return ReplicationPreview(rucio_storage, cluster_id=CLUSTER)


def _body(name, dids, destination="NCSA_DISK", copies=1, **spec):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
        "spec": {"selector": {"dids": dids}, "destination": destination, "copies": copies, **spec},
    }


def _placed(service, body):
    rule = ReplicationRule.model_validate(body)
    name = rule.metadata.name
    ref = ResourceRef(kind="ReplicationRule", namespace=NAMESPACE, name=name, uid=_uid(name))
    service.reconcile(rule, ref)


def _uid(name):
    """A stand-in for the UID the API server would give the resource."""
    return f"uid-{name}"


def _tag(name):
    return owner_tag(CLUSTER, _uid(name))


def test_new_resource_creates_rules_with_files_and_bytes_per_rse(preview, rucio_data):
    datasets = [rucio_data.dataset() for _ in range(2)]
    name = f"new-{rucio_data.scope}"
    (impact,) = preview.consequences(None, _body(name, datasets), None)
    assert (impact.action, impact.rules, impact.destination) == ("create", 2, "NCSA_DISK x1")
    assert impact.place == {"NCSA_DISK": Volume(4, 4002)}
    assert (
        impact.line() == "Rucio: create 2 rules to NCSA_DISK x1: place NCSA_DISK: 4 files, 4.0 kB"
    )


def test_an_unchanged_resource_does_nothing(preview, service, rucio_data):
    body = _body(f"same-{rucio_data.scope}", [rucio_data.dataset()])
    _placed(service, body)
    assert preview.consequences(_tag(body["metadata"]["name"]), body, body) == []


def test_deletion_counts_as_deletable_only_what_no_other_rule_locks(
    preview, service, rucio_storage, rucio_data
):
    shared, alone = rucio_data.dataset(), rucio_data.dataset()
    name = f"gone-{rucio_data.scope}"
    body = _body(name, [shared, alone], deletionPolicy="Delete")
    _placed(service, body)
    # Someone else's rule keeps the shared dataset's replicas on the same RSE.
    rucio_storage.add_rule(shared, RuleSpec("NCSA_DISK&type=DISK", comment=rucio_data.comment))

    (impact,) = preview.consequences(_tag(name), None, body)
    assert (impact.action, impact.rules) == ("delete", 2)
    assert impact.release == {"NCSA_DISK": Volume(4, 4002)}
    assert impact.deletable == {"NCSA_DISK": TWO_FILES}
    assert "becomes deletable (no other rule locks it): NCSA_DISK: 2 files" in impact.line()


def test_orphan_and_observe_delete_nothing(preview, service, rucio_data):
    name = f"orphan-{rucio_data.scope}"
    body = _body(name, [rucio_data.dataset()], deletionPolicy="Orphan")
    _placed(service, body)
    (impact,) = preview.consequences(_tag(name), None, body)
    assert (impact.action, impact.release, impact.deletable) == ("orphan", {}, {})
    observed = _body(name, body["spec"]["selector"]["dids"], managementPolicy="Observe")
    assert preview.consequences(_tag(name), None, observed) == []


def test_a_move_places_at_the_new_rse_and_frees_the_old(preview, service, rucio_data):
    name = f"move-{rucio_data.scope}"
    body = _body(name, [rucio_data.dataset()])
    _placed(service, body)
    moved = _body(name, body["spec"]["selector"]["dids"], destination="IN2P3_DISK")
    (impact,) = preview.consequences(_tag(name), moved, body)
    assert (impact.action, impact.destination) == ("move", "IN2P3_DISK x1")
    assert impact.place == {"IN2P3_DISK": TWO_FILES}
    assert impact.release == {"NCSA_DISK": TWO_FILES}
    assert impact.deletable == {"NCSA_DISK": TWO_FILES}


def test_fewer_copies_release_and_more_copies_place(preview, service, rucio_data):
    name = f"copies-{rucio_data.scope}"
    expression = "IN2P3_DISK|NCSA_DISK"
    body = _body(name, [rucio_data.dataset()], destination=expression, copies=2)
    _placed(service, body)
    fewer = _body(name, body["spec"]["selector"]["dids"], destination=expression, copies=1)
    (impact,) = preview.consequences(_tag(name), fewer, body)
    assert impact.action == "reduce"
    assert impact.release == {"IN2P3_DISK": TWO_FILES, "NCSA_DISK": TWO_FILES}
    assert "chooses which" in impact.note

    single = _body(f"grow-{rucio_data.scope}", body["spec"]["selector"]["dids"], expression)
    _placed(service, single)
    (grown,) = preview.consequences(_tag(single["metadata"]["name"]), body, single)
    assert (grown.action, grown.place, grown.release) == ("add-copies", {expression: TWO_FILES}, {})


def test_deselected_dids_are_released(preview, service, rucio_data):
    kept, dropped = rucio_data.dataset(), rucio_data.dataset()
    name = f"desel-{rucio_data.scope}"
    body = _body(name, [kept, dropped], deletionPolicy="Delete")
    _placed(service, body)
    (impact,) = preview.consequences(_tag(name), _body(name, [kept], deletionPolicy="Delete"), body)
    assert (impact.action, impact.rules, impact.note) == ("delete", 1, "of deselected DIDs")
    assert impact.deletable == {"NCSA_DISK": TWO_FILES}


def test_planner_reports_a_failure_as_not_consulted(rucio_server, rucio_data):
    storage = RucioStorage(
        rucio_server.settings(rucio_host="http://127.0.0.1:1"), retry=RetryPolicy(attempts=1)
    )
    planner = RucioPlanner(
        RucioStatus(consulted=True, reason="test"),
        lambda _facts: {"ReplicationRule": ReplicationPreview(storage)},
        lambda _c: "t",
    )
    body = _body(f"x-{rucio_data.scope}", [rucio_data.dataset()])
    change = Change(ResourceKey("ReplicationRule", NAMESPACE, "x"), Action.UPDATE, desired=body)
    change.live = body
    found = planner.estimate(change)
    assert found.lines[0].startswith("Rucio: not consulted for this change")
    assert planner.status.consulted is False
    assert "failed while planning ReplicationRule/steward/x" in planner.status.reason
    storage.close()


def test_dids_rucio_does_not_know_are_named(preview, rucio_data):
    ghost = rucio_data.did("never-registered")
    body = _body(f"ghost-{rucio_data.scope}", [rucio_data.dataset(), ghost])
    (impact,) = preview.consequences(None, body, None)
    assert impact.place == {"NCSA_DISK": TWO_FILES}
    assert f"1 of them name DIDs Rucio does not know ({ghost}): refused" in impact.line()


# -- Campaign staging ---------------------------------------------------------------------------


def _campaign(name, coverage, **spec):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
        "spec": {
            "site": "ncsa",
            "image": "example.org/pipelines:test",
            "steps": [{"name": "one", "pipeline": "pipelines/test.yaml#one"}],
            "coverage": coverage,
            "outputs": {"scope": "user.test"},
            **spec,
        },
    }


@pytest.fixture
def campaigns(rucio_storage):
    return CampaignPreview(rucio_storage, {"ncsa": "NCSA_DISK"}.get)


def test_a_new_campaign_stages_its_inputs_at_its_sites_disk(campaigns, rucio_data):
    on_tape = [rucio_data.dataset(rse="NCSA_TAPE") for _ in range(2)]
    body = _campaign(f"stage-{rucio_data.scope}", {"query": {"dids": on_tape}})
    (impact,) = campaigns.consequences(None, body, None)
    assert (impact.action, impact.rules, impact.destination) == ("create", 2, "NCSA_DISK x1")
    assert impact.place == {"NCSA_DISK": Volume(4, 4002)}
    assert impact.line() == (
        "Rucio: create 2 rules to NCSA_DISK x1: place NCSA_DISK: 4 files, 4.0 kB. "
        "Staging inputs (activity Staging, lifetime 30d)"
    )
    # An explicit destination wins over the Site's disk; unknown DIDs are named.
    ghost = rucio_data.did("never-registered")
    body = _campaign(
        f"dest-{rucio_data.scope}",
        {"query": {"dids": [on_tape[0], ghost]}},
        inputs={"destination": "IN2P3_DISK", "lifetime": "10d"},
    )
    (impact,) = campaigns.consequences(None, body, None)
    assert (impact.destination, impact.place) == ("IN2P3_DISK x1", {"IN2P3_DISK": TWO_FILES})
    assert "lifetime 10d" in impact.note
    assert f"1 of them name DIDs Rucio does not know ({ghost}): refused" in impact.note


def test_a_campaign_of_a_metadata_query_stages_what_the_query_matches(campaigns, rucio_data):
    rucio_data.dataset(meta={"datatype": "raw"})
    rucio_data.dataset(meta={"datatype": "calexp"}, files=3)
    coverage = {"query": {"scope": rucio_data.scope, "match": {"datatype": "raw"}}}
    (impact,) = campaigns.consequences(None, _campaign(f"q-{rucio_data.scope}", coverage), None)
    assert (impact.rules, impact.place) == (1, {"NCSA_DISK": TWO_FILES})


def test_campaigns_that_stage_nothing_say_nothing(campaigns, rucio_data):
    dataset = rucio_data.dataset()
    name = f"none-{rucio_data.scope}"
    data_ids = {"dataIds": [{"visit": 1, "detector": 2}]}
    assert campaigns.consequences(None, _campaign(name, data_ids), None) == []
    unstaged = _campaign(name, {"query": {"dids": [dataset]}}, inputs={"prestage": False})
    assert campaigns.consequences(None, unstaged, None) == []


def test_a_campaign_at_an_unknown_site_names_it(rucio_storage, rucio_data):
    preview = CampaignPreview(rucio_storage, lambda _name: None)
    body = _campaign(f"nosite-{rucio_data.scope}", {"query": {"dids": [rucio_data.dataset()]}})
    (impact,) = preview.consequences(None, body, None)
    assert (impact.rules, impact.destination, impact.place) == (1, None, {})
    assert "Site ncsa is not in the cluster or has no DISK RSE: destination unknown" in impact.note


def test_ending_a_campaign_lets_its_staging_rules_expire(campaigns, rucio_storage, rucio_data):
    shared, alone = rucio_data.dataset(), rucio_data.dataset()
    name = f"end-{rucio_data.scope}"
    tag = _tag(name)
    live = _campaign(name, {"query": {"dids": [shared, alone]}})
    staging = RuleSpec("NCSA_DISK", activity="Staging", comment=tag)
    rucio_storage.add_rules([shared, alone], staging)
    # The campaign's archive rule carries its tag too, but is not a staging rule.
    archive = RuleSpec("NCSA_TAPE", activity="Production Output", comment=tag)
    rucio_storage.add_rules([rucio_data.dataset()], archive)
    # Someone else's rule keeps the shared dataset's replicas.
    rucio_storage.add_rule(shared, RuleSpec("NCSA_DISK&type=DISK", comment=rucio_data.comment))

    (impact,) = campaigns.consequences(tag, None, live)
    assert (impact.action, impact.rules) == ("expire", 2)
    assert impact.release == {"NCSA_DISK": Volume(4, 4002)}
    assert impact.deletable == {"NCSA_DISK": TWO_FILES}
    assert "their lifetime becomes 1d when the campaign's last pods are recorded" in impact.line()

    closed = _campaign(name, live["spec"]["coverage"], desiredState="ClosedOut")
    (impact,) = campaigns.consequences(tag, closed, live)
    assert (impact.action, impact.rules) == ("expire", 2)
    assert "at closeout, once every invocation finished" in impact.note
    # A change that does not end it stages nothing new (its coverage was enumerated once).
    paused = _campaign(name, {"query": {"dids": [rucio_data.dataset()]}}, desiredState="Paused")
    assert campaigns.consequences(tag, paused, live) == []
    # Once released (a day to live at most), there is nothing left to release.
    for rule in rucio_storage.list_rules(comment=tag):
        rucio_storage.update_rule(rule.id, lifetime=timedelta(hours=23))
    assert campaigns.consequences(tag, None, live) == []


def test_ending_a_campaign_shows_what_the_deletion_gate_keeps(rucio_storage, rucio_data):
    held, free = rucio_data.dataset(), rucio_data.dataset()
    name = f"gate-{rucio_data.scope}"
    tag = _tag(name)
    live = _campaign(name, {"query": {"dids": [held, free]}})
    rucio_storage.add_rules([held, free], RuleSpec("NCSA_DISK", activity="Staging", comment=tag))
    hold = RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "hold", "namespace": NAMESPACE},
            "spec": {"selector": {"dids": [held]}, "lifetime": "3650d", "holds": [held]},
        }
    )
    # The campaign's own (unfinished) entry in the facts does not keep its own inputs.
    own = Campaign.model_validate(live)
    preview = CampaignPreview(
        rucio_storage, {"ncsa": "NCSA_DISK"}.get, ClusterFacts(policies=[hold], campaigns=[own])
    )
    (impact,) = preview.consequences(tag, None, live)
    assert (impact.action, impact.rules) == ("expire", 1)
    assert impact.release == {"NCSA_DISK": TWO_FILES}
    assert "kept by the deletion gate: LegalHold=1" in impact.note
    assert impact.gate is not None
    assert impact.gate["requester"] == f"Campaign/{NAMESPACE}/{name}"
    assert (impact.gate["mode"], impact.gate["protected"]) == ("Acting", {"LegalHold": 1})
    # A freeze on the staging RSE: the plan would not act, and says why.
    site = Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": "frozen"},
            "spec": {
                "facility": "NCSA",
                "rses": [
                    {
                        "name": "NCSA_DISK",
                        "type": "DISK",
                        "protocols": [
                            {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/d"}
                        ],
                    }
                ],
                "deletionFreeze": {"reason": "restore in progress"},
            },
        }
    )
    frozen = CampaignPreview(rucio_storage, {"ncsa": "NCSA_DISK"}.get, ClusterFacts(sites=[site]))
    (impact,) = frozen.consequences(tag, None, live)
    assert impact.gate is not None
    assert impact.gate["mode"] == "Frozen"
    assert "deletion is frozen at NCSA_DISK: Site/frozen: restore in progress" in impact.note


def test_the_planner_previews_campaigns(campaigns, rucio_data):
    planner = RucioPlanner(
        RucioStatus(consulted=True, reason="test"), lambda _facts: {"Campaign": campaigns}
    )
    body = _campaign(f"plan-{rucio_data.scope}", {"query": {"dids": [rucio_data.dataset()]}})
    change = Change(ResourceKey("Campaign", NAMESPACE, "plan"), Action.CREATE, desired=body)
    found = planner.estimate(change)
    assert found.lines == [
        (
            "Rucio: create 1 rules to NCSA_DISK x1: place NCSA_DISK: 2 files, 2.0 kB. "
            "Staging inputs (activity Staging, lifetime 30d)"
        )
    ]
    assert found.details[0]["place"] == {"NCSA_DISK": {"files": 2, "bytes": 2001}}


# -- Protections as the whole plan leaves them --------------------------------------------------


def _retention(name, dids, **spec):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "RetentionPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
        "spec": {"selector": {"dids": dids}, "lifetime": "1s", **spec},
    }


def _held_and_free(rucio_storage, rucio_data):
    """Two datasets with a rule each at NCSA_DISK, and a policy holding the first."""
    held, free = rucio_data.dataset(), rucio_data.dataset()
    for did in (held, free):
        rucio_storage.add_rule(did, RuleSpec("NCSA_DISK", comment=rucio_data.comment))
    legal = _retention(f"legal-{rucio_data.scope}", [rucio_data.did("nothing")], holds=[held])
    return held, free, legal


def _retention_planner(rucio_storage, rucio_data, policies):
    """A planner previewing RetentionPolicies an hour after the test's rules were made."""
    later = max(r.created_at for r in rucio_storage.list_rules(comment=rucio_data.comment))
    return RucioPlanner(
        RucioStatus(consulted=True, reason="test"),
        lambda facts: {
            "RetentionPolicy": RetentionPreview(
                rucio_storage, facts, clock=lambda: later + timedelta(hours=1)
            )
        },
        facts=ClusterFacts(policies=[RetentionPolicy.model_validate(b) for b in policies]),
    )


def test_a_hold_released_in_the_same_plan_no_longer_keeps_another_policys_removal(
    rucio_storage, rucio_data
):
    held, free, legal = _held_and_free(rucio_storage, rucio_data)
    scratch = _retention(f"scratch-{rucio_data.scope}", [held, free], action="Delete")
    planner = _retention_planner(rucio_storage, rucio_data, [legal])

    def key(body):
        return ResourceKey("RetentionPolicy", NAMESPACE, body["metadata"]["name"])

    created = Change(key(scratch), Action.CREATE, desired=scratch)
    # Alone, the scratch policy is judged by the hold in the cluster.
    (alone,) = planner.estimate(created, [created]).details
    assert (alone["rules"], alone["gate"]["protected"]) == (1, {"LegalHold": 1})
    # With the hold's policy pruned in the same plan, the held dataset is removed too.
    pruned = Change(key(legal), Action.PRUNE, live=legal)
    plan = [pruned, created]
    (judged,) = planner.estimate(created, plan).details
    assert (judged["rules"], judged["gate"]["protected"]) == (2, {})
    assert planner.estimate(pruned, plan).details == []  # a deleted policy removes nothing
    # The same when the plan only edits the hold away; a refused edit changes nothing.
    edited = Change(key(legal), Action.UPDATE, desired={**legal, "spec": {**legal["spec"]}})
    edited.desired["spec"]["holds"] = []
    edited.live = legal
    (judged,) = planner.estimate(created, [edited, created]).details
    assert judged["rules"] == 2
    edited.refused = "the API server refuses it"
    (judged,) = planner.estimate(created, [edited, created]).details
    assert judged["rules"] == 1


def test_a_released_hold_shows_what_a_policy_outside_the_plan_then_removes(
    rucio_storage, rucio_data
):
    held, free, legal = _held_and_free(rucio_storage, rucio_data)
    scratch = _retention(f"scratch-{rucio_data.scope}", [held, free])
    elsewhere = _retention(f"other-{rucio_data.scope}", [rucio_data.did("unrelated")])
    planner = _retention_planner(rucio_storage, rucio_data, [legal, scratch, elsewhere])
    pruned = Change(
        ResourceKey("RetentionPolicy", NAMESPACE, legal["metadata"]["name"]),
        Action.PRUNE,
        live=legal,
    )
    pruned.lost_protections = [{"protection": "LegalHold", "dids": [held]}]
    (impact,) = planner.estimate(pruned, [pruned]).details
    # Only the held dataset's rule: the free one goes whatever this plan does.
    assert (impact["action"], impact["rules"]) == ("expire", 1)
    assert impact["release"] == {"NCSA_DISK": {"files": 2, "bytes": 2001}}
    assert impact["gate"]["dids"] == [held]
    assert impact["gate"]["exposed_by"] == str(pruned.key)
    assert (
        f"then RetentionPolicy/{NAMESPACE}/{scratch['metadata']['name']}, which this plan does "
        f"not change, would expire them at its next cycle: {pruned.key} no longer protects {held}"
    ) in impact["note"]
    # A policy the plan changes shows its own preview instead.
    changed = Change(
        ResourceKey("RetentionPolicy", NAMESPACE, scratch["metadata"]["name"]),
        Action.UPDATE,
        desired=scratch,
        live=scratch,
    )
    assert planner.estimate(pruned, [pruned, changed]).details == []
