"""Expected outputs, junk and missing outputs (LDM-592 LDF1 a, c, d) on the real servers.

A step declares ``expectedOutputs``; the kwok stage reports ``kwok.steward.lsst.io/outputs``
files per invocation, named ``<pod>.<k>.fits``, so ``*.0.fits`` expects the first and makes
the others junk. Passes are driven one at a time (`support.campaigns`) against the session's
real API server (Jobs, kwok pods) and real Rucio.
"""

import pytest

from steward.storage.ledger import LedgerStore
from support.campaigns import campaign_body

pytestmark = [pytest.mark.kube, pytest.mark.rucio]


def _files(harness, uid, role):
    with harness.service.sessions() as session:
        return LedgerStore(session).files(uid, role=role)


def _degraded(status):
    return next(c for c in status["conditions"] if c["type"] == "Degraded")


@pytest.mark.parametrize("keep", [True, False], ids=["keepJunk", "dropJunk"])
def test_unexpected_outputs_are_junk_kept_only_on_request(
    campaign_harness, rucio_data, rucio_storage, namespace, keep
):
    scope = rucio_data.scope
    name = "junk" if keep else "nojunk"
    body = campaign_body(
        name,
        namespace,
        invocations=4,
        steps=[
            {
                "name": "one",
                "expectedOutputs": ["*.0.fits"],
                "podAnnotations": {"kwok.steward.lsst.io/outputs": "3"},
            }
        ],
        scope=scope,
        outputs={"scope": scope, "rse": "NCSA_DISK", "archive": "NCSA_TAPE", "keepJunk": keep},
    )
    driven = campaign_harness.start(body)
    status = driven.until(
        "the campaign to succeed",
        lambda s: s["phase"] == "Succeeded" and s["outputs"] == 4,
    )
    uid = driven.uid
    assert status["junk"] == 8
    assert driven.step_status("one")["junk"] == 8
    assert status["failures"] == {}
    outputs = _files(campaign_harness, uid, "output")
    junk = _files(campaign_harness, uid, "junk")
    assert sorted(f.did.rsplit(".", 2)[-2] for f in outputs) == ["0"] * 4
    assert sorted(f.did.rsplit(".", 2)[-2] for f in junk) == ["1"] * 4 + ["2"] * 4
    dataset = f"{scope}:{name}.one.{uid[:8]}"
    junk_dataset = f"{dataset}.junk"
    assert sorted(rucio_storage.list_content(dataset)) == sorted(f.did for f in outputs)
    [archive] = rucio_storage.list_did_rules(dataset)
    assert archive.rse_expression == "NCSA_TAPE"
    registered = rucio_storage.get_metadata_bulk([f.did for f in junk])
    if keep:
        assert all(f.registered for f in junk)
        assert sorted(rucio_storage.list_content(junk_dataset)) == sorted(f.did for f in junk)
        assert set(registered) == {f.did for f in junk}
        # Junk is kept where it was written, never archived.
        assert rucio_storage.list_did_rules(junk_dataset) == []
        replicas = rucio_storage.list_replicas([junk_dataset])
        assert all(states == {"NCSA_DISK": "AVAILABLE"} for states in replicas.values())
    else:
        assert not any(f.registered for f in junk)
        assert rucio_storage.get_collection(junk_dataset) is None
        assert registered == {}

    driven.patch_spec({"desiredState": "ClosedOut"})
    status = driven.until("closeout", lambda s: s["phase"] == "ClosedOut")
    assert not rucio_storage.is_open(dataset)
    if keep:
        assert not rucio_storage.is_open(junk_dataset)
    assert status["junk"] == 8


def test_an_invocation_missing_an_expected_output_fails_until_accepted(
    campaign_harness, rucio_data, rucio_storage, namespace
):
    scope = rucio_data.scope
    body = campaign_body(
        "missing",
        namespace,
        invocations=3,
        steps=[
            {"name": "one", "expectedOutputs": ["*.0.fits", "*.1.fits"]},
            {"name": "two", "dependsOn": ["one"]},
        ],
        scope=scope,
    )
    driven = campaign_harness.start(body)
    status = driven.until(
        "step one to fail", lambda s: s["steps"][0]["phase"] == "Failed" and s["outputs"] == 3
    )
    assert driven.step_status("one")["failed"] == 3
    assert driven.step_status("two")["phase"] == "Waiting"
    assert status["failures"] == {"MissingOutputs": 3}
    assert _degraded(status)["reason"] == "InvocationsFailed"
    failed = [e for e in driven.events if e[1] == "InvocationFailed"]
    assert len(failed) == 3
    assert all("no output matches" in message and ".1.fits" in message for *_, message in failed)
    # What the invocations did write is still brought back (LDF1 d), as outputs.
    outputs = _files(campaign_harness, driven.uid, "output")
    assert len(outputs) == 3
    assert all(f.registered for f in outputs)
    report = campaign_harness.ledger.report(campaign_harness.ledger.find("missing", namespace))
    assert "MissingOutputs" in str(report.to_dict())

    # Closeout does not close a campaign whose expected outputs are missing.
    driven.patch_spec({"desiredState": "ClosedOut"})
    status = driven.step()
    assert status["phase"] == "Failed"
    degraded = _degraded(status)
    assert degraded["reason"] == "CloseoutBlocked"
    assert "failed invocations (one: 3)" in degraded["message"]
    assert rucio_storage.is_open(f"{scope}:missing.one.{driven.uid[:8]}")

    # The operator accepts the step as it is: its dependents run, then closeout completes.
    driven.patch_spec(
        {
            "desiredState": "Running",
            "controls": {
                "accept": [{"step": "one", "maxFailures": 3, "reason": "second file optional"}]
            },
        }
    )
    driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    assert driven.step_status("two")["succeeded"] == 3
    assert driven.step_status("one")["accepted"] == 3
    driven.patch_spec({"desiredState": "ClosedOut"})
    driven.until("closeout", lambda s: s["phase"] == "ClosedOut")
    assert not rucio_storage.is_open(f"{scope}:missing.one.{driven.uid[:8]}")
