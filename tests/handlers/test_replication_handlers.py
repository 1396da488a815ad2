"""The ReplicationRule handlers with kopf's own Body, Patch and Memo, against the real Rucio.

kopf hands a handler a *live* body: the watch stream replaces its content while the handler
runs (``kopf._core.reactor.processing`` does ``live_fresh_body._replace_with(raw)``), and a
handler's patch reaches the API server only after it returned. These tests make both happen
at a chosen moment, in process, which a test of the whole operator can only hope to hit.
"""

import contextvars
import copy
import threading
import uuid

import kopf
import pytest

from steward.handlers import common
from steward.handlers.protections import cluster_facts
from steward.handlers.replication import refresh_pass, rule_changed
from steward.services.ownership import owner_tag
from support.handlers import CLUSTER, applied
from support.rucio import Faults
from support.waiting import until

pytestmark = pytest.mark.rucio


def refresh(body, patch, memo):
    """A pass of the kind's refresh loop over ``body``, with the memo the handlers share."""
    refresh_pass({}, memo.tracked)(body, patch, memo.tracked.track(body["metadata"]["uid"]))


def _raw(name, namespace, dids, generation, status=None):
    body = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "generation": generation,
        },
        "spec": {"selector": {"dids": dids}, "destination": "NCSA_DISK"},
    }
    if status is not None:
        body["status"] = status
    return body


def _condition(raw, type_):
    return next(c for c in raw["status"]["conditions"] if c["type"] == type_)


class SignallingLock:
    """The per-object lock, telling the test when a handler starts waiting for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.waiting = threading.Event()

    def __enter__(self):
        self.waiting.set()
        self._lock.acquire()
        return self

    def __exit__(self, *_):
        self._lock.release()


def test_a_handler_reconciles_and_reports_the_spec_of_one_body_copy(
    memo, rucio_storage, rucio_data
):
    # A refresh parsed generation 1, then waited for the object's lock while the watch
    # brought generation 2. It must act on one version and report that version.
    first, second = rucio_data.dataset(), rucio_data.dataset()
    name = f"copy-{rucio_data.scope}"
    raw = _raw(name, "handlers", [first], 1)
    created = kopf.Patch()
    rule_changed(body=kopf.Body(copy.deepcopy(raw)), patch=created, memo=memo)
    raw = applied(raw, created)
    body = kopf.Body(copy.deepcopy(raw))
    lock = SignallingLock()
    uid = raw["metadata"]["uid"]
    common._locks[uid] = lock
    lock._lock.acquire()
    patch = kopf.Patch()
    context = contextvars.copy_context()  # kopf's settings, as its worker threads have them
    refreshing = threading.Thread(
        target=lambda: context.run(refresh, body=body, patch=patch, memo=memo)
    )
    refreshing.start()
    until("the refresh to wait for the lock", lock.waiting.is_set, timeout=30)
    body._replace_with({**_raw(name, "handlers", [first, second], 2), "status": raw["status"]})
    lock._lock.release()
    refreshing.join(timeout=120)
    common.forget(body)

    status = dict(patch)["status"]
    placed = {r.did for r in rucio_storage.list_rules(comment=owner_tag(CLUSTER, uid))}
    reconciled = 2 if placed == {first, second} else 1
    assert placed in ({first}, {first, second})
    assert status["observedGeneration"] == reconciled
    assert status["selected"] == reconciled


def test_a_later_success_clears_a_degraded_its_body_never_saw(memo, rucio_storage, rucio_data):
    dataset = rucio_data.dataset()
    name = f"stale-{rucio_data.scope}"
    server = _raw(name, "handlers", [dataset], 1)

    ok = kopf.Patch()
    rule_changed(body=kopf.Body(copy.deepcopy(server)), patch=ok, memo=memo)
    server = applied(server, ok)
    assert _condition(server, "Degraded")["status"] == "False"

    # A tick while Rucio answers 503: Degraded=True is patched after the handler returns.
    before_failure = copy.deepcopy(server)
    real = memo.context.rucio
    faults = Faults(real)
    faults.fail("list_rules")
    memo.context.rucio = faults
    memo.context.snapshot._rucio = faults
    memo.context.snapshot._taken = None
    failed = kopf.Patch()
    with pytest.raises(kopf.TemporaryError):
        refresh(body=kopf.Body(copy.deepcopy(server)), patch=failed, memo=memo)
    server = applied(server, failed)
    assert _condition(server, "Degraded")["status"] == "True"

    # The next tick had taken its body before that patch landed; Rucio answers again.
    memo.context.rucio = real
    memo.context.snapshot._rucio = real
    healed = kopf.Patch()
    refresh(body=kopf.Body(before_failure), patch=healed, memo=memo)
    server = applied(server, healed)
    degraded = _condition(server, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("False", "Healthy")
    assert _condition(server, "Ready")["reason"] == "AllRulesOK"  # the replica was there
    assert server["status"]["observedGeneration"] == 1


def _rucio_refusing_every_call(memo):
    """Make every Rucio call of the handlers fail; return a function that undoes it."""
    real = memo.context.rucio
    faults = Faults(real)
    for method in ("list_rules", "iter_rules", "add_rules", "list_dids"):
        faults.fail(method)
    memo.context.rucio = faults
    memo.context.snapshot._rucio = faults
    memo.context.snapshot._taken = None

    def heal():
        memo.context.rucio = real
        memo.context.snapshot._rucio = real

    return heal


def test_a_refresh_leaves_a_resource_no_pass_reported_on_to_its_change_handler(
    memo, rucio_storage, rucio_data
):
    # In a burst the refresh loop or an edge timer can reach an object
    # before the create handler. It must not make the first pass, nor call Rucio.
    dataset = rucio_data.dataset()
    name = f"first-{rucio_data.scope}"
    raw = _raw(name, "handlers", [dataset], 1)
    tag = owner_tag(CLUSTER, raw["metadata"]["uid"])
    heal = _rucio_refusing_every_call(memo)
    early = kopf.Patch()
    refresh(body=kopf.Body(copy.deepcopy(raw)), patch=early, memo=memo)
    heal()
    assert dict(early) == {}
    assert rucio_storage.list_rules(comment=tag) == []

    created = kopf.Patch()
    rule_changed(body=kopf.Body(copy.deepcopy(raw)), patch=created, memo=memo)
    assert [r.did for r in rucio_storage.list_rules(comment=tag)] == [dataset]
    raw = applied(raw, created)

    # Once a pass reported on it, the refresh does its work (and meets the refusals).
    heal = _rucio_refusing_every_call(memo)
    with pytest.raises(kopf.TemporaryError):
        refresh(body=kopf.Body(copy.deepcopy(raw)), patch=kopf.Patch(), memo=memo)
    heal()
    common.forget(kopf.Body(raw))


def test_the_deletion_freeze_comes_from_the_settings_the_process_started_with(memo):
    assert cluster_facts({}, memo).freeze is None
    frozen = memo.context.settings.model_copy(update={"deletion_freeze": "restore under way"})
    memo.context.settings = frozen
    assert cluster_facts({}, memo).freeze == "restore under way"
