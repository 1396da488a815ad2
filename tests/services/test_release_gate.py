"""A ReplicationRule's Delete policy goes through the deletion gate, against the real Rucio.

`ReplicationService.release` is the one way a ReplicationRule gives rules up; under Delete it
asks the same gate as retention and OODS eviction (design.md: one deletion gate), so a legal
hold, a compliance lock or a freeze keeps the rules, a deleted resource keeps its finalizer,
and every deletion is an intent in the audit trail before Rucio is asked.
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steward.models.replication import ReplicationRule
from steward.models.retention import RetentionPolicy
from steward.services.deletion import DONE, INTENT
from steward.services.ownership import owner_tag
from steward.services.plan import ReplicationPreview, Volume
from steward.services.protections import ClusterFacts
from steward.services.replication import (
    RELEASED_PREFIX,
    ReleaseRefusedError,
    ReplicationService,
)
from steward.storage.audit import AuditFilter
from support.samples import replication_ref

pytestmark = pytest.mark.rucio

NAMESPACE = "release-gate"
CLUSTER = "release-gate-cluster"


def _uid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"release-gate/{name}"))


def _resource(name, dids, **spec):
    return ReplicationRule.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": _uid(name)},
            "spec": {
                "selector": {"dids": dids},
                "destination": "NCSA_DISK",
                "deletionPolicy": "Delete",
                **spec,
            },
        }
    )


def _policy(name, **spec):
    """A RetentionPolicy that only protects (its selector matches nothing of the test's)."""
    return RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"selector": {"dids": ["none:nothing"]}, "lifetime": "21d", **spec},
        }
    )


def _service(rucio_storage, audit, facts=None):
    return ReplicationService(
        rucio=rucio_storage, audit=audit, cluster_id=CLUSTER, facts=facts or ClusterFacts()
    )


def _owned(rucio_storage, resource):
    tag = owner_tag(CLUSTER, resource.metadata.uid)
    return {rule.did: rule for rule in rucio_storage.list_rules(comment=tag)}


def _going(rule):
    """Whether Rucio is removing the rule (a deleted rule expires within the hour)."""
    return rule.expires_at is not None and rule.expires_at <= datetime.now(UTC) + timedelta(hours=2)


def _condition(outcome, type_):
    return next(c for c in outcome.status["conditions"] if c["type"] == type_)


def test_a_legal_hold_keeps_the_rule_of_a_deselected_did(rucio_storage, rucio_data, audit):
    kept, held = rucio_data.dataset(), rucio_data.dataset()
    name = f"hold-{rucio_data.scope}"
    resource = _resource(name, [kept, held])
    outcome = _service(rucio_storage, audit).reconcile(resource, replication_ref(resource))
    held_rule = _owned(rucio_storage, resource)[held]

    facts = ClusterFacts(policies=[_policy(f"legal-{rucio_data.scope}", holds=[held])])
    smaller = _resource(name, [kept])
    after = _service(rucio_storage, audit, facts).reconcile(
        smaller, replication_ref(smaller, 2), outcome.status
    )

    assert after.status["releaseProtected"] == 1
    degraded = _condition(after, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ReleaseProtected")
    assert "LegalHold=1" in degraded["message"]
    assert held in degraded["message"]
    assert ("Warning", "ReleaseProtected") in [(t, r) for t, r, _ in after.events]
    still = rucio_storage.get_rule(held_rule.id)
    assert still.comment == owner_tag(CLUSTER, resource.metadata.uid)
    assert not _going(still)
    assert audit.query(AuditFilter(name=name, action=INTENT)) == []
    again = _service(rucio_storage, audit, facts).reconcile(
        smaller, replication_ref(smaller, 2), after.status
    )
    assert again.events == []  # announced once; the condition keeps saying why
    assert _condition(again, "Degraded")["reason"] == "ReleaseProtected"

    # The hold is lifted: the next pass releases the rule, through the gate.
    freed = _service(rucio_storage, audit).reconcile(
        smaller, replication_ref(smaller, 2), again.status
    )
    assert freed.status["releaseProtected"] == 0
    assert _condition(freed, "Degraded")["status"] == "False"
    gone = rucio_storage.get_rule(held_rule.id)
    assert _going(gone)
    assert gone.comment == RELEASED_PREFIX + owner_tag(CLUSTER, resource.metadata.uid)
    (intent,) = audit.query(AuditFilter(name=name, action=INTENT))
    (done,) = audit.query(AuditFilter(name=name, action=DONE))
    assert intent.id < done.id
    assert held_rule.id in (intent.after or "")
    assert [e.target for e in audit.query(AuditFilter(name=name, action="rucio.rule.delete"))] == [
        held_rule.id
    ]


def test_a_deleted_resource_keeps_its_finalizer_while_a_lock_keeps_its_rules(
    rucio_storage, rucio_data, audit
):
    locked, free = rucio_data.dataset(), rucio_data.dataset()
    name = f"lock-{rucio_data.scope}"
    resource = _resource(name, [locked, free])
    outcome = _service(rucio_storage, audit).reconcile(resource, replication_ref(resource))
    rules = _owned(rucio_storage, resource)
    until = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    lock = {"name": "survey", "mode": "Compliance", "until": until, "dids": [locked]}
    facts = ClusterFacts(policies=[_policy(f"locks-{rucio_data.scope}", locks=[lock])])

    service = _service(rucio_storage, audit, facts)
    with pytest.raises(ReleaseRefusedError, match="ComplianceLock=1"):
        service.finalize(replication_ref(resource), resource.spec, outcome.status)
    assert not _going(rucio_storage.get_rule(rules[locked].id))
    assert _going(rucio_storage.get_rule(rules[free].id))  # what no protection covers goes
    assert set(_owned(rucio_storage, resource)) == {locked}

    # Orphan keeps the data and lets the resource go.
    orphan = _resource(name, [locked, free], deletionPolicy="Orphan")
    assert service.finalize(replication_ref(orphan, 2), orphan.spec, outcome.status)
    assert _owned(rucio_storage, resource) == {}
    assert not _going(rucio_storage.get_rule(rules[locked].id))


def test_the_freeze_stops_every_release(rucio_storage, rucio_data, audit):
    datasets = [rucio_data.dataset() for _ in range(2)]
    name = f"freeze-{rucio_data.scope}"
    resource = _resource(name, datasets)
    outcome = _service(rucio_storage, audit).reconcile(resource, replication_ref(resource))
    frozen = _service(rucio_storage, audit, ClusterFacts(freeze="restore of NCSA_DISK"))
    with pytest.raises(ReleaseRefusedError, match="restore of NCSA_DISK"):
        frozen.finalize(replication_ref(resource), resource.spec, outcome.status)
    assert set(_owned(rucio_storage, resource)) == set(datasets)
    assert not any(_going(rule) for rule in _owned(rucio_storage, resource).values())
    assert audit.query(AuditFilter(name=name, action="rucio.rule.delete")) == []


def test_the_plan_shows_what_the_gate_keeps(rucio_storage, rucio_data, audit):
    kept, held = rucio_data.dataset(), rucio_data.dataset()
    name = f"preview-{rucio_data.scope}"
    resource = _resource(name, [kept, held])
    _service(rucio_storage, audit).reconcile(resource, replication_ref(resource))
    facts = ClusterFacts(policies=[_policy(f"legal-{rucio_data.scope}", holds=[held])])
    preview = ReplicationPreview(rucio_storage, cluster_id=CLUSTER, facts=facts)
    body = resource.model_dump(mode="json", by_alias=True, exclude_none=True)

    (impact,) = preview.consequences(owner_tag(CLUSTER, resource.metadata.uid), None, body)
    assert (impact.action, impact.rules) == ("delete", 1)
    files = rucio_storage.list_files(kept)
    assert impact.release == {"NCSA_DISK": _volume(files)}
    assert "kept by the deletion gate: LegalHold=1" in impact.note
    assert impact.gate["protected"] == {"LegalHold": 1}
    assert all(not _going(rule) for rule in _owned(rucio_storage, resource).values())


def _volume(files):
    return Volume(len(files), sum(f.bytes for f in files))
