"""Selecting by DID name pattern, against the real Rucio server.

Every path that lists a selector's data goes through `steward.services.selection`: the
listing itself (full and incremental, Rucio's ``name`` filter), a RetentionPolicy's plan and
its ``steward plan`` preview, a ReplicationRule's placement and its Rucio subscription, and a
Campaign's inputs. Each test owns its scope (``rucio_data``) and names its datasets so that
a pattern selects some of them and not others.
"""

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.campaign import CampaignSpec
from steward.models.common import name_wildcard_regex
from steward.models.replication import ReplicationRule
from steward.models.retention import RetentionPolicy
from steward.services.audit import ResourceRef
from steward.services.campaign.data import coverage
from steward.services.deletion import DeletionGate
from steward.services.ownership import owner_tag, subscription_name
from steward.services.plan import RetentionPreview
from steward.services.protections import ClusterFacts
from steward.services.replication import ReplicationService
from steward.services.retention import RetentionService
from steward.storage.rucio import RucioStorage, RuleSpec
from support.samples import CAMPAIGN

pytestmark = pytest.mark.rucio

NAMESPACE = "names"
CLUSTER = "test-cluster"
V1, V2 = {"version": "v1"}, {"version": "v2"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _week_outputs(rucio_data):
    """Scratch outputs of two weeks, one look-alike in upper case, metadata to combine."""
    return {
        name: rucio_data.dataset(name, files=1, meta=meta)
        for name, meta in [
            ("w46-jointcal", V1),
            ("w46-coadd", V2),
            ("w47-jointcal", V1),
            ("W46-upper", V1),
            ("xw46-prefixed", V1),
        ]
    }


def _ref(kind, resource, generation=1):
    return ResourceRef(
        kind=kind,
        namespace=NAMESPACE,
        name=resource.metadata.name,
        uid=resource.metadata.uid,
        generation=generation,
    )


# -- the listing --------------------------------------------------------------------------------


def test_the_listing_selects_by_name_alone_with_metadata_and_minus_exclusions(
    rucio_storage, rucio_data
):
    made = _week_outputs(rucio_data)
    scope = rucio_data.scope
    w46 = {made["w46-jointcal"], made["w46-coadd"]}
    # Case-sensitive on every database (SQLite's LIKE is not): W46-upper is left out.
    assert set(rucio_storage.list_dids(scope, name="w46-*")) == w46
    assert rucio_storage.list_dids(scope, V1, name="w46-*") == [made["w46-jointcal"]]
    assert rucio_storage.list_dids(scope, name="w46-*", exclude=[V2]) == [made["w46-jointcal"]]
    assert rucio_storage.list_dids(scope, name="*-jointcal") == sorted(
        [made["w46-jointcal"], made["w47-jointcal"]]
    )
    assert rucio_storage.list_dids(scope, name="w47-jointcal") == [made["w47-jointcal"]]
    assert rucio_storage.list_dids(scope, name="w46-jointcal*", did_type="file") == [
        f"{made['w46-jointcal']}.f0"
    ]


def test_an_underscore_or_a_dot_in_a_pattern_is_only_itself(rucio_storage, rucio_data):
    # Rucio turns '*' into SQL's '%' and escapes '_' (SQL's one-character wildcard).
    kept = [rucio_data.dataset(name, files=1) for name in ("u_1", "a.b-1")]
    for look_alike in ("ux1", "axb-1"):
        rucio_data.dataset(look_alike, files=1)
    assert rucio_storage.list_dids(rucio_data.scope, name="u_*") == [kept[0]]
    assert rucio_storage.list_dids(rucio_data.scope, name="a.b*") == [kept[1]]


def test_the_case_of_a_pattern_counts_on_sqlite_too(private_rucio_server):
    # PostgreSQL's LIKE is case-sensitive, SQLite's is not: Steward checks what comes back.
    with RucioStorage(private_rucio_server.settings(rucio_calls_per_second=10_000)) as storage:
        scope = f"t{secrets.token_hex(8)}"
        storage.add_scope(scope)
        for name in ("w46-a", "W46-b", "w46-A"):
            storage.add_dataset(f"{scope}:{name}")
        assert storage.list_dids(scope, name="w46-*") == [f"{scope}:w46-A", f"{scope}:w46-a"]
        assert storage.list_new_dids(
            scope, None, since=datetime.now(UTC) - timedelta(hours=1), name="W46-*"
        ) == [f"{scope}:W46-b"]


def test_the_incremental_listing_honours_the_pattern(rucio_storage, rucio_data):
    since = datetime.now(UTC) - timedelta(minutes=1)
    made = _week_outputs(rucio_data)
    scope = rucio_data.scope
    new = rucio_storage.list_new_dids(scope, None, since=since, name="w46-*")
    assert set(new) == {made["w46-jointcal"], made["w46-coadd"]}
    assert rucio_storage.list_new_dids(scope, V1, since=since, name="w46-*") == [
        made["w46-jointcal"]
    ]
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert rucio_storage.list_new_dids(scope, None, since=later, name="w46-*") == []


# -- RetentionPolicy ----------------------------------------------------------------------------


def test_a_retention_policy_by_name_plans_and_expires_only_the_matching_datasets(
    rucio_storage, rucio_data, audit
):
    made = _week_outputs(rucio_data)
    rules = {
        did: rucio_storage.add_rule(did, RuleSpec(rse_expression="NCSA_DISK"))
        for did in made.values()
    }
    policy = RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {
                "name": f"w46-{rucio_data.scope}",
                "namespace": NAMESPACE,
                "uid": secrets.token_hex(8),
            },
            "spec": {
                "selector": {"scope": rucio_data.scope, "name": "w46-*"},
                "rses": "NCSA_DISK",
                "lifetime": "21d",
            },
        }
    )
    clock = Clock()
    clock.now += timedelta(days=22)
    service = RetentionService(
        rucio_storage, audit, DeletionGate(rucio_storage, audit, clock=clock), clock=clock
    )
    wanted = {made["w46-jointcal"], made["w46-coadd"]}

    # steward plan shows the same selection the operator then acts on.
    body = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    (impact,) = RetentionPreview(rucio_storage, clock=clock).consequences(None, body, None)
    assert (impact.action, impact.rules) == ("expire", 2)

    ref = _ref("RetentionPolicy", policy)
    shown = service.reconcile(policy, ref, ClusterFacts())
    outcome = service.reconcile(policy, ref, ClusterFacts(), shown.status)
    assert outcome.status["plan"]["rules"] == 2
    assert outcome.status["removed"] == 2
    expiring = {
        did
        for did, rule_id in rules.items()
        if rucio_storage.get_rule(rule_id).expires_at is not None
    }
    assert expiring == wanted


# -- ReplicationRule ----------------------------------------------------------------------------


def _rule(rucio_data, label, **selector):
    name = f"{label}-{rucio_data.scope}"
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            },
            "spec": {
                "selector": {"scope": rucio_data.scope, **selector},
                "destination": "NCSA_DISK",
            },
        }
    )


def _placed(rucio_storage, resource):
    return {
        r.did for r in rucio_storage.list_rules(comment=owner_tag(CLUSTER, resource.metadata.uid))
    }


@pytest.mark.parametrize(
    ("selector", "wanted"),
    [
        ({"name": "w46-*"}, {"w46-jointcal", "w46-coadd"}),
        ({"name": "w46-*", "match": V1}, {"w46-jointcal"}),
    ],
    ids=["name", "name-and-metadata"],
)
def test_a_replication_rule_by_name_places_only_the_matching_datasets(
    rucio_storage, rucio_data, audit, selector, wanted
):
    made = _week_outputs(rucio_data)
    resource = _rule(rucio_data, "place", **selector)
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER)
    outcome = service.reconcile(resource, _ref("ReplicationRule", resource))
    assert outcome.status["selected"] == len(wanted)
    assert _placed(rucio_storage, resource) == {made[name] for name in wanted}


def test_an_incremental_pass_places_only_new_matching_datasets(rucio_storage, rucio_data, audit):
    made = _week_outputs(rucio_data)
    resource = _rule(rucio_data, "incremental", name="w46-*")
    service = ReplicationService(
        rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, full_resync=timedelta(days=1)
    )
    first = service.reconcile(resource, _ref("ReplicationRule", resource))
    new = rucio_data.dataset("w46-late", files=1)
    rucio_data.dataset("w47-late", files=1)
    second = service.reconcile(resource, _ref("ReplicationRule", resource), first.status)
    assert second.status["selection"]["mode"] == "Incremental"
    assert _placed(rucio_storage, resource) == {made["w46-jointcal"], made["w46-coadd"], new}


def test_the_subscription_places_the_names_the_listing_selects(
    rucio_storage, rucio_data, rucio_server, audit
):
    resource = _rule(rucio_data, "subscribe", name="w46-*", match=V1)
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER)
    service.reconcile(resource, _ref("ReplicationRule", resource))
    subscription = rucio_storage.get_subscription(subscription_name(CLUSTER, resource.metadata.uid))
    assert subscription is not None
    assert subscription.filter["pattern"] == name_wildcard_regex("w46-*")
    assert subscription.filter["version"] == ["^v1$"]

    # Data arriving after the resource: the transmogrifier places it, not the operator.
    arrived = _week_outputs(rucio_data)
    rucio_server.daemons.run("transmogrifier")
    # The operator has not run since the data arrived: every rule in the scope is the
    # subscription's.
    by_subscription = {r.did for r in rucio_storage.list_rules(scope=rucio_data.scope)}
    listed = set(rucio_storage.list_dids(rucio_data.scope, V1, name="w46-*"))
    assert by_subscription == listed == {arrived["w46-jointcal"]}


# -- Campaign inputs ----------------------------------------------------------------------------


def test_campaign_inputs_by_name_are_the_matching_datasets(rucio_storage, rucio_data):
    made = _week_outputs(rucio_data)
    spec = CampaignSpec.model_validate(
        {
            **CAMPAIGN["spec"],
            "coverage": {"query": {"scope": rucio_data.scope, "name": "*-jointcal"}},
        }
    )
    inputs = {invocation.data_id["did"] for invocation in coverage(rucio_storage, spec)}
    assert inputs == {made["w46-jointcal"], made["w47-jointcal"]}
    assert all(re.match(name_wildcard_regex("*-jointcal"), d.partition(":")[2]) for d in inputs)
