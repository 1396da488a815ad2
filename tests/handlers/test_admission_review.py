"""The validating webhook's handler, called as kopf calls handlers, against the real API server.

kopf runs a synchronous handler in its worker threads, the ones reconciles hold through
their Rucio calls; the API server waits for a webhook only its timeout (10 s as rendered),
then refuses the create (``failurePolicy: Fail``). So a review must not need one of them.
"""

import asyncio
import threading
from types import SimpleNamespace

import kopf
import pytest
from kopf._core.actions.invocation import invoke

from steward.handlers.admission import review

pytestmark = pytest.mark.kube


def _rule(destination):
    return kopf.Body(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "ReplicationRule",
            "metadata": {"name": "raw-to-slac", "namespace": "steward"},
            "spec": {"selector": {"dids": ["raw:a"]}, "destination": destination},
        }
    )


def test_a_review_is_answered_while_every_worker_thread_of_kopf_is_busy(kube_api):
    settings = kopf.OperatorSettings()
    settings.execution.max_workers = 1
    memo = kopf.Memo()
    memo.context = SimpleNamespace(kube_api=kube_api)  # all a review uses: it lists the Sites
    busy, release = threading.Event(), threading.Event()

    def reconcile(**_):  # a reconcile holding kopf's only worker thread, as a hung Rucio would
        busy.set()
        release.wait(30)

    async def scenario():
        held = asyncio.create_task(invoke(reconcile, settings=settings))
        await asyncio.to_thread(busy.wait, 10)
        try:
            with pytest.raises(kopf.AdmissionError) as refused:
                await invoke(
                    review,
                    settings=settings,
                    kwargs={"body": _rule("site=SLAC"), "memo": memo, "warnings": []},
                )
            still_held = not release.is_set() and not held.done()
        finally:
            release.set()
            await held
        return str(refused.value), still_held

    message, still_held = asyncio.run(scenario())
    assert still_held  # answered while the reconcile held the thread, not after it
    assert message.startswith("ReplicationRule/raw-to-slac: spec.destination:")
    assert "matches no RSE" in message
