"""Catch-up archiving (use case 17) against the real Rucio server, and its pure decisions.

A backlog is made the way an outage makes one: rules are created while no transfer runs, and
the service's injected clock is moved past ``catchUp.after`` (no test sleeps). Rucio's conveyor
daemons then drain it, and the next pass puts everything back to nominal.
"""

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import ValidationError

from steward.models.replication import ReplicationRule
from steward.observability import forget_rule_states, observe_backlog
from steward.services.audit import ResourceRef
from steward.services.catchup import (
    CATCHING_UP,
    plan_catch_up,
    raised_transfers,
    wanted_priority,
)
from steward.services.ownership import owner_tag
from steward.services.replication import ReplicationService
from steward.services.validation import validate_paths
from steward.storage.audit import AuditFilter
from steward.storage.rucio import Rule, RuleState
from support.rucio import mock_site

NAMESPACE = "steward"
CLUSTER = "catchup-cluster"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _resource(name, dids, destination, **spec):
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
            "spec": {"selector": {"dids": dids}, "destination": destination, **spec},
        }
    )


def _uid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"catchup/{name}"))


def _ref(name):
    return ResourceRef(
        kind="ReplicationRule", namespace=NAMESPACE, name=name, uid=_uid(name), generation=1
    )


def _rule(state, age, priority=3):
    return Rule(
        id=secrets.token_hex(16),
        scope="s",
        name=secrets.token_hex(4),
        account="steward",
        rse_expression="site=X",
        copies=1,
        state=state,
        priority=priority,
        created_at=NOW - age,
    )


def _spec(**catch_up):
    return _resource("pure", ["s:d"], "site=X", catchUp={"after": "1h", **catch_up}).spec


def _condition(status, kind):
    return next(c for c in status["conditions"] if c["type"] == kind)


# -- pure decisions -----------------------------------------------------------------------------


def test_catch_up_starts_at_the_threshold_and_lasts_until_the_backlog_is_empty():
    spec = _spec(backlog=2, transfers=10)
    old = [_rule(RuleState.REPLICATING, timedelta(hours=2))]
    young = [_rule(RuleState.REPLICATING, timedelta(minutes=5)) for _ in range(5)]
    assert plan_catch_up(spec, old + young, None, NOW).active is False

    started = plan_catch_up(spec, [*old, *old, *young], None, NOW)
    assert (started.active, started.started, started.backlog) == (True, True, 2)
    assert (started.priority, started.transfers, started.since) == (4, 20, NOW)

    later = NOW + timedelta(minutes=30)
    status = started.status(boosted=2)
    going = plan_catch_up(spec, old, status, later)  # below the threshold: still draining
    assert (going.active, going.started, going.since) == (True, False, NOW)

    done = plan_catch_up(spec, [_rule(RuleState.OK, timedelta(hours=3))], status, later)
    assert (done.active, done.ended, done.priority, done.transfers) == (False, True, 3, 10)


def test_only_rules_that_a_faster_share_drains_are_backlog():
    spec = _spec()
    hours = timedelta(hours=2)
    held = [
        _rule(s, hours) for s in (RuleState.OK, RuleState.SUSPENDED, RuleState.WAITING_APPROVAL)
    ]
    assert plan_catch_up(spec, held, None, NOW).backlog == 0
    late = [_rule(s, hours) for s in (RuleState.REPLICATING, RuleState.STUCK, RuleState.INJECT)]
    assert plan_catch_up(spec, late, None, NOW).backlog == 3
    unknown = Rule(
        id="x", scope="s", name="n", account="a", rse_expression="e", copies=1,
        state=RuleState.STUCK, created_at=None,
    )  # fmt: skip
    assert plan_catch_up(spec, [unknown], None, NOW).backlog == 0


@pytest.mark.parametrize("nominal", [1, 2, 3, 7, 100, 4001])
@pytest.mark.parametrize("factor", [1.01, 1.5, 1.99, 2.0])
def test_the_raised_share_is_above_nominal_and_at_most_twice_it(nominal, factor):
    raised = raised_transfers(nominal, factor)
    assert nominal < raised <= 2 * nominal


def test_the_catch_up_priority_defaults_to_one_above_nominal_and_stops_at_five():
    assert _spec().catch_up_priority() == 4
    assert (
        _resource(
            "p", ["s:d"], "site=X", priority=5, catchUp={"after": "1h"}
        ).spec.catch_up_priority()
        == 5
    )
    assert _spec(priority=5).catch_up_priority() == 5


def test_ok_rules_keep_a_raised_priority_until_catch_up_ends():
    spec = _spec(backlog=1)
    late = _rule(RuleState.REPLICATING, timedelta(hours=2))
    plan = plan_catch_up(spec, [late], None, NOW)
    assert wanted_priority(plan, late, 3) == 4
    assert wanted_priority(plan, _rule(RuleState.OK, timedelta(hours=2), priority=4), 3) == 4
    assert wanted_priority(plan, _rule(RuleState.OK, timedelta(hours=2), priority=3), 3) == 3
    assert wanted_priority(None, late, 3) == 3


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"priority": 4, "catchUp": {"after": "1h", "priority": 3}}, "below the nominal"),
        ({"catchUp": {"after": "1h", "transfers": 5}, "destination": "NCSA_TAPE"}, "single term"),
        ({"catchUp": {"after": "1h", "factor": 2.5}}, "less than or equal to 2"),
        ({"catchUp": {"after": "1h", "factor": 1}}, "greater than 1"),
        ({"catchUp": {"after": "1h", "backlog": 0}}, "greater than or equal to 1"),
        ({"catchUp": {"after": "1h", "transfers": "5"}}, "integer"),
    ],
)
def test_bad_catch_up_specs_are_refused_with_the_reason(spec, words):
    document = {"destination": "site=X", **spec}
    with pytest.raises(ValidationError, match=words):
        _resource("bad", ["s:d"], document.pop("destination"), **document)


# -- against the real Rucio server --------------------------------------------------------------


class OwnSite:
    """A site of the test's own: its transfer limits are keyed by its unique name."""

    def __init__(self, storage):
        self.facility = f"CU{secrets.token_hex(3).upper()}"
        self.source = f"{self.facility}_TAPE"
        """Where the test's data is (a distance inside one site is always known)."""
        self.destination = f"site={self.facility}&type=DISK"
        storage.register_site(
            mock_site(
                self.facility.lower(),
                self.facility,
                {self.source: "TAPE", f"{self.facility}_DISK": "DISK"},
            )
        )


@pytest.fixture
def own_site(rucio_storage):
    return OwnSite(rucio_storage)


class Clock:
    """The service's wall clock, moved by the test."""

    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now


@pytest.mark.rucio
def test_a_backlog_raises_priority_and_share_until_it_drains_then_nominal(
    rucio_storage, rucio_data, rucio_server, audit, own_site
):
    clock = Clock()
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, clock=clock)
    datasets = [rucio_data.dataset(rse=own_site.source) for _ in range(3)]
    name = f"catchup-{rucio_data.scope}"
    destination = own_site.destination
    resource = _resource(
        name,
        datasets,
        destination,
        catchUp={"after": "1h", "backlog": 2, "transfers": 10},
    )
    tag = owner_tag(CLUSTER, _uid(name))

    first = service.reconcile(resource, _ref(name))
    assert first.status["catchUp"]["active"] is False
    assert rucio_storage.get_transfer_limit(destination, "Data Consolidation").max_transfers == 10
    assert {r.priority for r in rucio_storage.list_rules(comment=tag)} == {3}

    clock.now += timedelta(hours=2)  # the transfers did not run: an outage
    behind = service.reconcile(resource, _ref(name), first.status)
    catch_up = behind.status["catchUp"]
    assert (catch_up["active"], catch_up["backlog"], catch_up["priority"]) == (True, 3, 4)
    assert (catch_up["transfers"], catch_up["boosted"]) == (20, 3)
    assert {r.priority for r in rucio_storage.list_rules(comment=tag)} == {4}
    assert rucio_storage.get_transfer_limit(destination, "Data Consolidation").max_transfers == 20
    assert [e[1] for e in behind.events] == ["CatchUpStarted"]
    condition = _condition(behind.status, CATCHING_UP)
    assert (condition["status"], condition["reason"]) == ("True", "BacklogDraining")

    again = service.reconcile(resource, _ref(name), behind.status)
    assert again.events == []  # idempotent: nothing more to ask of Rucio
    assert again.status["catchUp"] == {**catch_up, "since": catch_up["since"]}

    rucio_server.daemons.converge()
    drained = service.reconcile(resource, _ref(name), again.status)
    assert drained.status["counts"]["OK"] == 3
    assert drained.status["catchUp"]["active"] is False
    assert {r.priority for r in rucio_storage.list_rules(comment=tag)} == {3}
    assert rucio_storage.get_transfer_limit(destination, "Data Consolidation").max_transfers == 10
    assert [e[1] for e in drained.events] == ["CatchUpEnded"]
    assert _condition(drained.status, CATCHING_UP)["status"] == "False"

    limits = audit.query(AuditFilter(name=name, action="rucio.transferlimit.set"))
    assert [(e.result, e.message) for e in limits] == [
        ("intent", ""),
        ("success", "nominal share"),
        ("intent", ""),
        ("success", "catch-up archiving"),
        ("intent", ""),
        ("success", "nominal share"),
    ]
    raised = audit.query(AuditFilter(name=name, action="rucio.rule.update"))
    assert sum(e.message == "catch-up archiving" for e in raised) == 6  # up 3, down 3
    assert audit.verify() == []


@pytest.mark.rucio
def test_a_pass_that_lost_its_status_decides_the_same(rucio_storage, rucio_data, audit, own_site):
    clock = Clock()
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, clock=clock)
    datasets = [rucio_data.dataset(rse=own_site.source) for _ in range(2)]
    name = f"lost-{rucio_data.scope}"
    destination = own_site.destination
    resource = _resource(
        name, datasets, destination, catchUp={"after": "30m", "backlog": 2, "transfers": 4}
    )
    service.reconcile(resource, _ref(name))
    clock.now += timedelta(hours=1)
    behind = service.reconcile(resource, _ref(name))  # no status: as after a crash
    assert behind.status["catchUp"]["active"] is True
    crashed = service.reconcile(resource, _ref(name))  # the status write was lost again
    assert crashed.status["catchUp"]["transfers"] == 8
    assert [e[1] for e in crashed.events] == ["CatchUpStarted"]  # said again, nothing redone
    assert len(audit.query(AuditFilter(name=name, action="rucio.transferlimit.set"))) == 4


@pytest.mark.rucio
def test_deleting_a_resource_mid_catch_up_puts_the_share_back(
    rucio_storage, rucio_data, audit, own_site
):
    clock = Clock()
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, clock=clock)
    name = f"gone-{rucio_data.scope}"
    destination = own_site.destination
    resource = _resource(
        name,
        [rucio_data.dataset(rse=own_site.source)],
        destination,
        catchUp={"after": "1h", "transfers": 3, "factor": 1.5},
    )
    service.reconcile(resource, _ref(name))
    clock.now += timedelta(hours=2)
    behind = service.reconcile(resource, _ref(name))
    assert rucio_storage.get_transfer_limit(destination, "Data Consolidation").max_transfers == 4
    events = service.finalize(_ref(name), resource.spec, behind.status)
    assert ("Normal", "CatchUpEnded", "transfer limit back to 3") in events
    assert rucio_storage.get_transfer_limit(destination, "Data Consolidation").max_transfers == 3


@pytest.mark.rucio
def test_observe_reports_the_backlog_and_raises_nothing(rucio_storage, rucio_data, audit, own_site):
    clock = Clock()
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, clock=clock)
    dataset = rucio_data.dataset(rse=own_site.source)
    name = f"watch-{rucio_data.scope}"
    destination = own_site.destination
    managed = _resource(name, [dataset], destination)
    service.reconcile(managed, _ref(name))  # rules exist, made while managed
    observed = _resource(
        name,
        [dataset],
        destination,
        managementPolicy="Observe",
        catchUp={"after": "1h", "transfers": 6},
    )
    clock.now += timedelta(hours=2)
    outcome = service.reconcile(observed, _ref(name))
    assert outcome.status["catchUp"] == {"active": False, "backlog": 1, "boosted": 0}
    assert _condition(outcome.status, CATCHING_UP)["reason"] == "Observing"
    assert rucio_storage.get_transfer_limit(destination, "Data Consolidation") is None
    tag = owner_tag(CLUSTER, _uid(name))
    assert {r.priority for r in rucio_storage.list_rules(comment=tag)} == {3}


def test_validate_refuses_two_owners_of_one_transfer_limit(tmp_path):
    root = Path(__file__).resolve().parents[2]
    documents = []
    for name, destination in (("a", "site=NCSA&type=TAPE"), ("b", "type=TAPE&site=NCSA")):
        document = {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": f"raw-{name}", "namespace": "steward"},
            "spec": {
                "selector": {"scope": "raw", "match": {"datatype": "raw"}},
                "destination": destination,
                "catchUp": {"after": "2h", "transfers": 40},
            },
        }
        documents.append(yaml.safe_dump(document, sort_keys=False))
    path = tmp_path / "rules.yaml"
    path.write_text("---\n".join(documents))
    result = validate_paths([path], root / "sites", now=NOW)
    (problem,) = [p.format() for p in result.problems if "catchUp" in p.format()]
    assert "rules.yaml:" in problem
    assert "already owned by ReplicationRule/raw-a" in problem


def test_the_backlog_is_a_metric_until_the_resource_goes():
    namespace, name = "metrics", f"rr-{secrets.token_hex(3)}"
    observe_backlog(namespace, name, {"active": True, "backlog": 7})

    def sample(phase):
        return REGISTRY.get_sample_value(
            "steward_replication_backlog_rules",
            {"namespace": namespace, "name": name, "phase": phase},
        )

    assert (sample("backlog"), sample("catching_up")) == (7, 1)
    observe_backlog(namespace, name, {"active": False, "backlog": 0})
    assert (sample("backlog"), sample("catching_up")) == (0, 0)
    forget_rule_states(namespace, name)
    assert sample("backlog") is None


def test_the_documented_example_validates_against_the_repository_sites(tmp_path):
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "replication.md").read_text()
    section = text[text.index("## Catch-up archiving") :]
    example = section[section.index("```yaml") + len("```yaml") : section.index("```\n\n")]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    result = validate_paths([path], root / "sites", now=NOW)
    assert result.problems == []
    (rule,) = [yaml.safe_load(example)]
    spec = ReplicationRule.model_validate(rule).spec
    assert spec.catch_up is not None
    assert raised_transfers(spec.catch_up.transfers, spec.catch_up.factor) == 400


@pytest.mark.rucio
def test_a_priority_changed_behind_stewards_back_is_drift_not_catch_up(
    rucio_storage, rucio_data, audit, own_site
):
    service = ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=CLUSTER)
    name = f"drift-{rucio_data.scope}"
    resource = _resource(
        name, [rucio_data.dataset(rse=own_site.source)], own_site.destination,
        catchUp={"after": "1h"},
    )  # fmt: skip
    first = service.reconcile(resource, _ref(name))
    (rule,) = rucio_storage.list_rules(comment=owner_tag(CLUSTER, _uid(name)))
    rucio_storage.update_rule(rule.id, priority=1)
    restored = service.reconcile(resource, _ref(name), first.status)
    assert [e[1] for e in restored.events] == ["RuleUpdated"]
    assert rucio_storage.get_rule(rule.id).priority == 3
