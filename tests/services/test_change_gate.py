"""A ReplicationRule's change of copies or destination goes through the deletion gate.

Rucio's reduce and move remove the replicas at RSEs that leave a rule once the new placement
is OK, so a change that can do that is judged like a release (design.md: one deletion gate):
a legal hold, a lock, a freeze at an RSE the change leaves or the last custodial copy keeps
the rule as it is, reported in status, an Event and the audit trail, and the change is made
once the protection ends. Against the real Rucio server.
"""

import json
import uuid
from dataclasses import dataclass, replace

import pytest

from steward.exceptions import RucioTransientError
from steward.models.replication import ReplicationRule, ReplicationRuleStatus
from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from steward.services.ownership import owner_tag
from steward.services.plan import ReplicationPreview, Volume
from steward.services.protections import ClusterFacts
from steward.services.replication import ReplicationService
from steward.storage.audit import AuditFilter
from steward.storage.rucio import Rule
from support.rucio import Faults
from support.samples import replication_ref

pytestmark = pytest.mark.rucio

NAMESPACE = "change-gate"
CLUSTER = "change-gate-cluster"
BOTH_DISKS = "IN2P3_DISK|NCSA_DISK"


def _uid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"change-gate/{name}"))


def _resource(name, dids, destination, copies=1):
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
            "spec": {"selector": {"dids": dids}, "destination": destination, "copies": copies},
        }
    )


def _hold(name, did):
    """A RetentionPolicy that only holds ``did`` (its selector matches nothing of the test's)."""
    return RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"dids": ["none:nothing"]}, "lifetime": "21d", "holds": [did]},
        }
    )


def _frozen(site, reason):
    body = site.model_dump(by_alias=True, exclude_none=True)
    body["spec"]["deletionFreeze"] = {"reason": reason}
    return Site.model_validate(body)


def _service(rucio_storage, audit, facts=None):
    return ReplicationService(
        rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, facts=facts or ClusterFacts()
    )


def _rules(rucio_storage, resource):
    return rucio_storage.list_rules(comment=owner_tag(CLUSTER, resource.metadata.uid))


def _condition(outcome, type_):
    return next(c for c in outcome.status["conditions"] if c["type"] == type_)


@dataclass(frozen=True)
class Placed:
    """One dataset placed at NCSA_DISK by a resource of its own, about to move to IN2P3."""

    name: str
    dataset: str
    at_ncsa: ReplicationRule
    to_in2p3: ReplicationRule
    status: dict
    rule: Rule


def _placed_at_ncsa(rucio_storage, audit, rucio_data, label):
    dataset = rucio_data.dataset()
    name = f"{label}-{rucio_data.scope}"
    at_ncsa = _resource(name, [dataset], "NCSA_DISK")
    placed = _service(rucio_storage, audit).reconcile(at_ncsa, replication_ref(at_ncsa))
    (rule,) = _rules(rucio_storage, at_ncsa)
    to_in2p3 = _resource(name, [dataset], "IN2P3_DISK")
    return Placed(name, dataset, at_ncsa, to_in2p3, placed.status, rule)


def _move(rucio_storage, audit, placed, status, facts=None):
    """A pass over the resource moved to IN2P3_DISK, from ``status``."""
    to_in2p3 = placed.to_in2p3
    return _service(rucio_storage, audit, facts).reconcile(
        to_in2p3, replication_ref(to_in2p3, 2), status
    )


def _unmoved(rucio_storage, placed):
    """Whether the resource's only rule is still the one at NCSA_DISK, with no child."""
    (still,) = _rules(rucio_storage, placed.at_ncsa)
    return (still.id, still.rse_expression, still.child_rule_id) == (
        placed.rule.id,
        "NCSA_DISK",
        None,
    )


def _refusals(audit, name):
    return [
        row
        for row in audit.query(AuditFilter(name=name, action="rucio.rule.change"))
        if row.result == "refused"
    ]


def test_a_legal_hold_keeps_a_reduce_of_copies_until_it_is_lifted(rucio_storage, rucio_data, audit):
    held = rucio_data.dataset()
    name = f"reduce-{rucio_data.scope}"
    two = _resource(name, [held], BOTH_DISKS, copies=2)
    placed = _service(rucio_storage, audit).reconcile(two, replication_ref(two))
    (rule,) = _rules(rucio_storage, two)

    facts = ClusterFacts(policies=[_hold(f"legal-{rucio_data.scope}", held)])
    one = _resource(name, [held], BOTH_DISKS, copies=1)
    kept = _service(rucio_storage, audit, facts).reconcile(
        one, replication_ref(one, 2), placed.status
    )

    (still,) = _rules(rucio_storage, two)
    assert (still.id, still.copies, still.rse_expression, still.child_rule_id) == (
        rule.id,
        2,
        BOTH_DISKS,
        None,
    )
    assert kept.status["changeKept"]["rules"] == 1
    assert ReplicationRuleStatus.model_validate(kept.status).change_kept is not None
    degraded = _condition(kept, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChangeProtected")
    assert f"{held}: {BOTH_DISKS} x2 -> {BOTH_DISKS} x1 kept by LegalHold" in degraded["message"]
    ready, progressing = _condition(kept, "Ready"), _condition(kept, "Progressing")
    assert (ready["status"], ready["reason"]) == ("False", "ChangeProtected")
    assert progressing["status"] == "False"
    ((kind, reason, message),) = kept.events
    assert (kind, reason) == ("Warning", "ChangeProtected")
    assert held in message
    assert "LegalHold" in message
    (refusal,) = _refusals(audit, name)
    record = json.loads(refusal.after)
    assert (record["copies"], record["mode"]) == (1, "Acting")
    assert [(r["id"], r["keptBy"]) for r in record["rules"]] == [(rule.id, "LegalHold")]

    # Again (a timer pass, or a pass repeated after a crash): the same outcome, announced once.
    again = _service(rucio_storage, audit, facts).reconcile(
        one, replication_ref(one, 2), kept.status
    )
    assert again.events == []
    assert again.status["changeKept"] == kept.status["changeKept"]
    assert _condition(again, "Degraded")["reason"] == "ChangeProtected"
    assert len(_refusals(audit, name)) == 1
    assert [r.id for r in _rules(rucio_storage, two)] == [rule.id]

    # The hold is lifted: the next pass makes the change, intent first.
    freed = _service(rucio_storage, audit).reconcile(one, replication_ref(one, 2), again.status)
    assert freed.status["changeKept"] is None
    assert _condition(freed, "Degraded")["status"] == "False"
    assert any(reason == "RuleChanged" for _, reason, _ in freed.events)
    assert {(r.rse_expression, r.copies) for r in _rules(rucio_storage, two)} >= {(BOTH_DISKS, 1)}
    rows = audit.query(AuditFilter(name=name, action="rucio.rule.change"))
    assert [row.result for row in rows] == ["refused", "intent", "success"]
    assert [r["id"] for r in json.loads(rows[1].after)["rules"]] == [rule.id]


def test_a_freeze_at_the_rse_a_move_leaves_keeps_the_rule(
    rucio_storage, rucio_data, audit, rucio_sites
):
    placed = _placed_at_ncsa(rucio_storage, audit, rucio_data, "freeze")

    # A freeze at the RSE the rule moves to does not stop the move; one at the RSE it
    # leaves does.
    elsewhere = ClusterFacts(sites=[_frozen(rucio_sites.in2p3, "restore at IN2P3")])
    preview = ReplicationPreview(rucio_storage, cluster_id=CLUSTER, facts=elsewhere)
    body = placed.to_in2p3.model_dump(mode="json", by_alias=True, exclude_none=True)
    live = placed.at_ncsa.model_dump(mode="json", by_alias=True, exclude_none=True)
    (impact,) = preview.consequences(owner_tag(CLUSTER, _uid(placed.name)), body, live)
    assert (impact.action, impact.rules, impact.gate["mode"]) == ("move", 1, "Acting")

    frozen = ClusterFacts(sites=[_frozen(rucio_sites.ncsa, "restore of NCSA_DISK")])
    kept = _move(rucio_storage, audit, placed, placed.status, frozen)
    assert _unmoved(rucio_storage, placed)
    assert kept.status["changeKept"]["rules"] == 1
    ((kind, reason, message),) = kept.events
    assert (kind, reason) == ("Warning", "DeletionFrozen")
    assert "restore of NCSA_DISK" in message
    assert placed.dataset in message
    degraded = _condition(kept, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChangeProtected")
    assert "kept by Frozen" in degraded["message"]
    (refusal,) = _refusals(audit, placed.name)
    assert json.loads(refusal.after)["mode"] == "Frozen"

    # steward plan shows the same verdict.
    preview = ReplicationPreview(rucio_storage, cluster_id=CLUSTER, facts=frozen)
    (impact,) = preview.consequences(owner_tag(CLUSTER, _uid(placed.name)), body, live)
    assert (impact.action, impact.rules, impact.release) == ("move", 0, {})
    assert impact.gate["mode"] == "Frozen"
    assert impact.gate["protected"] == {"Frozen": 1}
    assert "kept by the deletion gate: Frozen=1" in impact.note
    assert "deletion is frozen at NCSA_DISK" in impact.note

    # The freeze ends: the move happens.
    moved = _move(rucio_storage, audit, placed, kept.status)
    assert any(reason == "RuleChanged" for _, reason, _ in moved.events)
    assert moved.status["changeKept"] is None


def test_the_last_custodial_copy_keeps_a_move_to_disk_not_one_to_tape(
    rucio_storage, rucio_data, audit
):
    to_disk, to_tape = rucio_data.dataset(), rucio_data.dataset()
    disk_name, tape_name = f"todisk-{rucio_data.scope}", f"totape-{rucio_data.scope}"
    service = _service(rucio_storage, audit)
    on_tape = _resource(disk_name, [to_disk], "NCSA_TAPE")
    first = service.reconcile(on_tape, replication_ref(on_tape))
    other = _resource(tape_name, [to_tape], "NCSA_TAPE")
    other_first = service.reconcile(other, replication_ref(other))

    disk = _resource(disk_name, [to_disk], "NCSA_DISK")
    kept = service.reconcile(disk, replication_ref(disk, 2), first.status)
    (rule,) = _rules(rucio_storage, on_tape)
    assert (rule.rse_expression, rule.child_rule_id) == ("NCSA_TAPE", None)
    assert "kept by LastCustodialReplica" in _condition(kept, "Degraded")["message"]

    tape = _resource(tape_name, [to_tape], "IN2P3_TAPE")
    moved = service.reconcile(tape, replication_ref(tape, 2), other_first.status)
    assert moved.status["changeKept"] is None
    assert any(reason == "RuleChanged" for _, reason, _ in moved.events)
    assert "IN2P3_TAPE" in {r.rse_expression for r in _rules(rucio_storage, other)}


def test_adding_copies_or_rses_needs_no_gate(rucio_storage, rucio_data, audit):
    dataset = rucio_data.dataset()
    name = f"adds-{rucio_data.scope}"
    facts = ClusterFacts(policies=[_hold(f"legal-{rucio_data.scope}", dataset)])
    service = _service(rucio_storage, audit, facts)
    one = _resource(name, [dataset], "NCSA_DISK")
    placed = service.reconcile(one, replication_ref(one))
    wider = _resource(name, [dataset], BOTH_DISKS)
    moved = service.reconcile(wider, replication_ref(wider, 2), placed.status)
    assert moved.status["changeKept"] is None
    assert any(reason == "RuleChanged" for _, reason, _ in moved.events)
    two = _resource(name, [dataset], BOTH_DISKS, copies=2)
    grown = service.reconcile(two, replication_ref(two, 3), moved.status)
    assert grown.status["changeKept"] is None
    assert any(reason == "RuleChanged" for _, reason, _ in grown.events)
    assert _refusals(audit, name) == []


class Killed(BaseException):
    """The operator process dies (SIGKILL) at a line of the pass."""


def test_a_pass_killed_after_rucio_changed_the_rule_changes_it_once(
    rucio_storage, rucio_data, audit, monkeypatch
):
    placed = _placed_at_ncsa(rucio_storage, audit, rucio_data, "killed")
    real = rucio_storage.change_rule

    def change_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(rucio_storage, "change_rule", change_then_die)
    with pytest.raises(Killed):
        _move(rucio_storage, audit, placed, placed.status)
    monkeypatch.undo()

    # Restarted from the status before the kill: the rule already heads to the target.
    again = _move(rucio_storage, audit, placed, placed.status)
    assert again.status["changeKept"] is None
    rules = _rules(rucio_storage, placed.at_ncsa)
    assert sorted(r.rse_expression for r in rules) == ["IN2P3_DISK", "NCSA_DISK"]
    rows = audit.query(AuditFilter(name=placed.name, action="rucio.rule.change"))
    assert [row.result for row in rows] == ["intent"]


def test_rucio_failing_while_the_gate_judges_postpones_the_change(rucio_storage, rucio_data, audit):
    placed = _placed_at_ncsa(rucio_storage, audit, rucio_data, "failing")
    faults = Faults(rucio_storage)
    # Where the custodial copies are is the gate's question, asked only while judging.
    faults.fail("list_rses", when=lambda expression="*": "TAPE" in expression)
    with pytest.raises(RucioTransientError):
        _move(faults, audit, placed, placed.status)
    assert _unmoved(rucio_storage, placed)
    assert audit.query(AuditFilter(name=placed.name, action="rucio.rule.change")) == []

    faults.heal()
    moved = _move(faults, audit, placed, placed.status)
    assert any(reason == "RuleChanged" for _, reason, _ in moved.events)


def test_the_plan_shows_the_gates_verdict_on_a_reduce(rucio_storage, rucio_data, audit):
    held, free = rucio_data.dataset(), rucio_data.dataset()
    name = f"plan-{rucio_data.scope}"
    two = _resource(name, [held, free], BOTH_DISKS, copies=2)
    _service(rucio_storage, audit).reconcile(two, replication_ref(two))
    live = two.model_dump(mode="json", by_alias=True, exclude_none=True)
    one = _resource(name, [held, free], BOTH_DISKS, copies=1)
    body = one.model_dump(mode="json", by_alias=True, exclude_none=True)
    tag = owner_tag(CLUSTER, _uid(name))

    facts = ClusterFacts(policies=[_hold(f"legal-{rucio_data.scope}", held)])
    (impact,) = ReplicationPreview(rucio_storage, cluster_id=CLUSTER, facts=facts).consequences(
        tag, body, live
    )
    assert (impact.action, impact.rules) == ("reduce", 1)
    # Only the change the gate lets through releases anything (both copies of its 2 files).
    assert impact.release == {"IN2P3_DISK": Volume(2, 2001), "NCSA_DISK": Volume(2, 2001)}
    assert impact.gate["protected"] == {"LegalHold": 1}
    assert (impact.gate["mode"], impact.gate["allowed"]) == ("Acting", 1)
    assert f"kept by the deletion gate: LegalHold=1 (1 rules stay as they are; e.g. {held}" in (
        impact.note
    )
    assert "LegalHold=1" in impact.line()

    (free_impact,) = ReplicationPreview(rucio_storage, cluster_id=CLUSTER).consequences(
        tag, body, live
    )
    assert (free_impact.rules, free_impact.gate["protected"]) == (2, {})
    assert f"allowed by the deletion gate (plan {free_impact.gate['hash']})" in free_impact.note
    # A preview never writes.
    assert {(r.copies, r.child_rule_id) for r in _rules(rucio_storage, two)} == {(2, None)}


def test_an_old_expression_that_selects_nothing_counts_the_rses_of_the_rules_locks(
    rucio_storage, rucio_data, audit
):
    rule = _placed_at_ncsa(rucio_storage, audit, rucio_data, "stale").rule
    # As if the RSE attribute the rule was placed by had since been removed.
    stale = replace(rule, rse_expression=f"gone{rucio_data.scope}=true")
    assert rucio_storage.list_rses(stale.rse_expression) == []
    view = _service(rucio_storage, audit)
    assert view.leaving(stale, "IN2P3_DISK", 1) == frozenset({"NCSA_DISK"})
    assert view.leaving(rule, "IN2P3_DISK|NCSA_DISK", 1) == frozenset()
