"""Signed checkpoints catch what the hash chain alone cannot: a rewound tail, a rewritten chain.

The trail lives in the test's database (SQLite, or PostgreSQL with
STEWARD_TEST_DATABASE=postgresql); the tampering is done as a database administrator would, with
the append-only triggers out of the way. The witness here is an in-memory list, as the
checkpoints an auditor exported would be; the ConfigMap witness has its own test against the
real API server below.
"""

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import kubernetes
import pytest

from steward.config import Settings
from steward.schema.audit import GENESIS_HASH
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.checkpoint import (
    CHECKPOINTS_CONFIGMAP,
    KEY_CONFIGMAP,
    AuditTamperedError,
    Checkpoint,
    CheckpointLoop,
    CheckpointService,
    ConfigMapWitness,
    PublicKey,
    SigningKey,
    due,
    load_signing_key,
    verify_trail,
)
from steward.storage.database import make_sessionmaker
from steward.storage.kubernetes import ConfigMaps
from support.clock import StepClock
from support.database import rewrite_chain, tamper

REF = ResourceRef(kind="ReplicationRule", namespace="steward", name="raw-to-in2p3", generation=1)


class Witness:
    """Checkpoints kept outside the database, as an auditor's export keeps them."""

    def __init__(self) -> None:
        self.kept: list[Checkpoint] = []

    def write(self, checkpoint):
        self.kept.append(checkpoint)

    def read(self):
        return list(self.kept), []


@pytest.fixture
def engine(audit_engine):
    return audit_engine


@pytest.fixture
def audit(engine):
    return AuditService(make_sessionmaker(engine), clock=StepClock())


@pytest.fixture
def key():
    return SigningKey.generate()


@pytest.fixture
def witness():
    return Witness()


@pytest.fixture
def signer(audit, key, witness):
    return CheckpointService(audit, key, witness, clock=StepClock())


def _fill(audit, count):
    for i in range(count):
        audit.record(AuditRecord(resource=REF, action="rucio.rule.add", actor="op", target=f"r{i}"))


def _verify(audit, witness, key):
    return verify_trail(audit, witness.kept, [key.public()])


def test_clean_trail_verifies_against_its_checkpoints(audit, signer, witness, key):
    first = signer.checkpoint()
    _fill(audit, 3)
    second = signer.checkpoint()
    _fill(audit, 2)
    third = signer.checkpoint()
    assert (first.number, first.seq, first.prev) == (1, 0, GENESIS_HASH)
    assert (second.seq, second.prev) == (3, first.digest())
    assert (third.number, third.seq, third.prev) == (3, 5, second.digest())
    assert [c.number for c in map(Checkpoint.from_row, audit.checkpoints())] == [1, 2, 3]

    result = _verify(audit, witness, key)
    assert result.findings == []
    assert (result.rows, len(result.checked)) == (5, 3)


def test_deleted_tail_with_the_head_rewound_is_caught(engine, audit, signer, witness, key):
    _fill(audit, 5)
    signer.checkpoint()
    row3 = audit.walk(capture={3}).captured[3]
    # Delete the last two rows and move the head back: the chain alone sees nothing wrong.
    tamper(
        engine,
        "DELETE FROM audit_entries WHERE id > 3",
        f"UPDATE audit_head SET seq = 3, hash = '{row3}'",  # noqa: S608 - a test's own value
    )
    assert audit.verify() == []

    findings = _verify(audit, witness, key).findings
    assert [(f.entry_id, f.checkpoint) for f in findings] == [(4, 1)]
    assert "rows 4-5 were deleted" in findings[0].problem


def test_whole_chain_rewritten_is_caught_and_the_range_named(engine, audit, signer, witness, key):
    _fill(audit, 3)
    signer.checkpoint()
    _fill(audit, 3)
    signer.checkpoint()
    rewrite_chain(engine, 5, {"target": "mallory"})
    assert audit.verify() == []

    findings = _verify(audit, witness, key).findings
    assert [(f.entry_id, f.checkpoint) for f in findings] == [(4, 2)]
    assert "first rewritten row is one of rows 4-6" in findings[0].problem


def test_rewrite_before_every_checkpoint_names_row_one(engine, audit, signer, witness, key):
    _fill(audit, 4)
    signer.checkpoint()
    rewrite_chain(engine, 2, {"actor": "nobody"})
    (finding,) = _verify(audit, witness, key).findings
    assert finding.entry_id == 1
    assert "rows 1-4" in finding.problem


def test_forged_checkpoint_is_caught(audit, signer, witness, key):
    _fill(audit, 2)
    genuine = signer.checkpoint()
    # An attacker without the key vouches for a shorter trail by editing a checkpoint.
    witness.kept = [replace(genuine, seq=1, head=audit.walk(capture={1}).captured[1])]
    findings = _verify(audit, witness, key).findings
    assert [f.checkpoint for f in findings] == [1]
    assert "signature does not verify" in findings[0].problem


def test_checkpoint_from_another_key_is_caught(audit, signer, witness, key):
    _fill(audit, 2)
    signer.checkpoint()
    mallory = SigningKey.generate()
    witness.kept.append(
        mallory.sign(
            Checkpoint(
                number=2,
                seq=2,
                head=audit.walk().last_hash,
                time=datetime.now(UTC),
                prev=witness.kept[0].digest(),
                key_id="",
            )
        )
    )
    findings = _verify(audit, witness, key).findings
    assert [f.checkpoint for f in findings] == [2]
    assert f"signed by another key ({mallory.public().key_id})" in findings[0].problem


def test_checkpoints_that_do_not_chain_are_caught(audit, key, witness, signer):
    signer.checkpoint()
    _fill(audit, 1)
    second = key.sign(
        Checkpoint(2, 1, audit.walk().last_hash, datetime.now(UTC), "f" * 64, key_id="")
    )
    witness.kept.append(second)
    findings = _verify(audit, witness, key).findings
    assert [f.checkpoint for f in findings] == [2]
    assert "do not chain" in findings[0].problem


def test_signing_refuses_to_bless_a_tampered_trail(engine, audit, signer, witness):
    _fill(audit, 3)
    signer.checkpoint()
    rewrite_chain(engine, 2, {"target": "x"})
    with pytest.raises(AuditTamperedError, match="no longer matches checkpoint 1"):
        signer.checkpoint()
    assert len(witness.kept) == 1


def test_the_witness_is_believed_over_the_database(engine, audit, signer, witness, key):
    _fill(audit, 2)
    signer.checkpoint()
    _fill(audit, 2)
    signer.checkpoint()
    tamper(engine, "DELETE FROM audit_checkpoints WHERE number = 2")
    assert signer.latest().number == 2  # from the witness, copied back into the database
    assert [c.number for c in audit.checkpoints()] == [1, 2]
    assert signer.checkpoint().number == 3


def test_checkpoint_json_round_trip_and_bad_input(key):
    signed = key.sign(Checkpoint(1, 0, GENESIS_HASH, datetime.now(UTC), GENESIS_HASH, ""))
    again = Checkpoint.from_json(json.loads(json.dumps(signed.to_json())))
    assert again == signed
    assert key.public().problem(again) is None
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.from_json({"number": "x"})


def test_keys_are_read_back_and_checked():
    signing = SigningKey.generate()
    assert SigningKey.from_pem(signing.pem(), source="f").public().key_id == (
        signing.public().key_id
    )
    assert PublicKey.from_pem(signing.public().pem()).key_id == signing.public().key_id
    with pytest.raises(Exception, match="is not an unencrypted PEM private key"):
        SigningKey.from_pem(b"nonsense", source="key.pem")


@pytest.mark.parametrize(
    ("last_seq", "last_time", "head", "now", "expected"),
    [
        (0, None, 0, 0.0, True),  # the first
        (10, 100.0, 1009, 101.0, False),
        (10, 100.0, 1010, 101.0, True),  # a thousand new rows
        (10, 100.0, 10, 399.0, False),
        (10, 100.0, 10, 400.0, True),  # five minutes, even with no new row
    ],
)
def test_due(last_seq, last_time, head, now, expected):
    assert due(last_seq, last_time, head, now, every_entries=1000, every_seconds=300.0) is expected


def test_loop_signs_after_n_rows_and_at_stop(audit, signer, witness):
    ticks = [0.0]
    loop = CheckpointLoop(signer, every_entries=3, every_seconds=300, clock=lambda: ticks[0])
    audit.listeners.append(loop.notify)
    assert loop.run_once().number == 1
    _fill(audit, 2)
    assert loop.run_once() is None
    _fill(audit, 1)
    assert loop.run_once().seq == 3
    ticks[0] = 301.0
    assert loop.run_once().number == 3  # the interval passed
    _fill(audit, 1)
    final = loop.stop()
    assert (final.number, final.seq) == (4, 4)
    assert [c.seq for c in witness.kept] == [0, 3, 3, 4]


def test_loop_postpones_after_a_failure(engine, audit, signer):
    ticks = [0.0]
    loop = CheckpointLoop(signer, every_entries=1, every_seconds=60, clock=lambda: ticks[0])
    _fill(audit, 2)
    assert loop.run_once().seq == 2
    _fill(audit, 1)
    rewrite_chain(engine, 1, {"target": "x"})
    loop.notify(3)
    assert loop.run_once() is None
    assert loop.failures == 1
    loop.notify(3)
    assert loop.run_once() is None  # postponed by an interval, not retried at once
    assert loop.failures == 1
    ticks[0] = 61.0
    assert loop.run_once() is None
    assert loop.failures == 2


@pytest.mark.kube
def test_configmap_witness_against_the_api_server(kube_api, namespace, audit, key):
    maps = ConfigMaps(kube_api, namespace)
    witness = ConfigMapWitness(maps, window=2)
    signer = CheckpointService(audit, key, witness, clock=StepClock())
    witness.publish_key(key.public())
    assert witness.public_key().key_id == key.public().key_id
    rotated = SigningKey.generate()
    witness.publish_key(rotated.public())
    witness.publish_key(key.public())
    assert {k.key_id for k in witness.public_keys()} == {
        key.public().key_id,
        rotated.public().key_id,
    }
    assert witness.public_keys()[0].key_id == key.public().key_id
    for _ in range(3):
        _fill(audit, 1)
        signer.checkpoint()
    kept, problems = witness.read()
    assert problems == []
    assert [c.number for c in kept] == [2, 3]  # the window keeps the newest two
    assert verify_trail(audit, kept, [key.public()]).findings == []

    core = kubernetes.client.CoreV1Api(kube_api)
    stored = core.read_namespaced_config_map(CHECKPOINTS_CONFIGMAP, namespace)
    assert stored.metadata.labels["app.kubernetes.io/component"] == "audit"
    core.patch_namespaced_config_map(
        CHECKPOINTS_CONFIGMAP, namespace, {"data": {"checkpoint-junk.json": "{"}}
    )
    assert len(witness.read()[1]) == 1
    assert core.read_namespaced_config_map(KEY_CONFIGMAP, namespace).data["key-id"] == (
        key.public().key_id
    )


@pytest.mark.kube
def test_signing_key_from_a_secret(kube_api, namespace):
    signing = SigningKey.generate()
    name = f"audit-key-{uuid.uuid4().hex[:6]}"
    kubernetes.client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        {"metadata": {"name": name}, "stringData": {"private-key.pem": signing.pem().decode()}},
    )
    settings = Settings(audit_signing_key_secret=f"{namespace}/{name}")
    loaded = load_signing_key(settings, "elsewhere", lambda space: ConfigMaps(kube_api, space))
    assert loaded.public().key_id == signing.public().key_id


def test_a_new_key_starts_a_chain_of_its_own_without_taking_old_names(audit, key, witness):
    _fill(audit, 2)
    old = CheckpointService(audit, key, witness, clock=StepClock())
    old.checkpoint()
    old.checkpoint()
    rotated = SigningKey.generate()
    new = CheckpointService(audit, rotated, witness, clock=StepClock())
    _fill(audit, 1)
    first = new.checkpoint()
    assert (first.number, first.prev, first.key_id) == (3, GENESIS_HASH, rotated.public().key_id)
    assert [c.number for c in witness.kept] == [1, 2, 3]
    both = verify_trail(audit, witness.kept, [rotated.public(), key.public()])
    assert both.findings == []
    only_new = verify_trail(audit, witness.kept, [rotated.public()])
    assert [f.checkpoint for f in only_new.findings] == [1, 2]


def test_rows_deleted_since_the_last_checkpoint_stop_the_next_one(engine, audit, signer):
    ticks = [0.0]
    loop = CheckpointLoop(signer, every_entries=100, every_seconds=60, clock=lambda: ticks[0])
    audit.listeners.append(loop.notify)
    _fill(audit, 2)
    assert loop.run_once().seq == 2
    _fill(audit, 3)  # rows 3-5, not yet signed
    row3 = audit.walk(capture={3}).captured[3]
    tamper(
        engine,
        "DELETE FROM audit_entries WHERE id > 3",
        f"UPDATE audit_head SET seq = 3, hash = '{row3}'",  # noqa: S608 - the test's own value
    )
    ticks[0] = 61.0
    assert loop.run_once() is None
    assert loop.failures == 1
    with pytest.raises(AuditTamperedError, match="rows 4-5 were deleted"):
        signer.checkpoint(written=5)


def test_a_forged_copy_does_not_hide_the_genuine_checkpoint(engine, audit, signer, witness, key):
    _fill(audit, 4)
    genuine = signer.checkpoint()
    row2 = audit.walk(capture={2}).captured[2]
    tamper(
        engine,
        "DELETE FROM audit_entries WHERE id > 2",
        f"UPDATE audit_head SET seq = 2, hash = '{row2}'",  # noqa: S608 - the test's own value
    )
    forged = replace(genuine, seq=2, head=row2)
    result = verify_trail(audit, [forged, genuine], [key.public()])
    assert [(f.entry_id, f.checkpoint) for f in result.findings] == [(None, 1), (3, 1)]
    assert "forged or altered" in result.findings[0].problem
    assert "rows 3-4 were deleted" in result.findings[1].problem


def test_what_this_process_signed_is_believed_over_both_copies(engine, audit, signer, witness):
    _fill(audit, 4)
    signer.checkpoint()
    row2 = audit.walk(capture={2}).captured[2]
    # Someone with the database and the cluster rewinds the trail and removes the evidence.
    tamper(
        engine,
        "DELETE FROM audit_entries WHERE id > 2",
        f"UPDATE audit_head SET seq = 2, hash = '{row2}'",  # noqa: S608 - the test's own value
        "DELETE FROM audit_checkpoints",
    )
    witness.kept.clear()
    with pytest.raises(AuditTamperedError, match="row 4, the last one signed, is gone"):
        signer.checkpoint()
