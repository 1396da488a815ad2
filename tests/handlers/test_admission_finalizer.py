"""The mutating webhook's handler: kopf's finalizer on a new object, others kept (pure)."""

import asyncio

import kopf

from steward.constants import FINALIZER
from steward.handlers.admission import add_finalizer


def _new(finalizers=None):
    metadata = {"name": "r", "namespace": "n"}
    if finalizers is not None:
        metadata["finalizers"] = finalizers
    return kopf.Body({"kind": "ReplicationRule", "metadata": metadata, "spec": {}})


def test_the_finalizer_is_added_to_a_new_object():
    body = _new()
    patch = kopf.Patch(body=body)
    asyncio.run(add_finalizer(body=body, patch=patch))
    assert patch.as_json_patch() == [
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    ]


def test_other_finalizers_are_kept_and_one_already_there_is_not_doubled():
    body = _new(["example.org/keep"])
    patch = kopf.Patch(body=body)
    asyncio.run(add_finalizer(body=body, patch=patch))
    assert patch.as_json_patch() == [
        {"op": "add", "path": "/metadata/finalizers/1", "value": FINALIZER}
    ]
    there = _new([FINALIZER])
    unchanged = kopf.Patch(body=there)
    asyncio.run(add_finalizer(body=there, patch=unchanged))
    assert unchanged.as_json_patch() == []
