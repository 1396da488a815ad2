"""kopf's watch events compacted (`steward.handlers.watchfilter`): no ``managedFields``, strings
interned.

The pure tests pin what is removed and what is shared; the guards fail when kopf moves the
function the adapter wraps (the adapter must then be checked again, not silently stop
working); the real-API test reads kopf's own watch stream, listing and watch both, from the
real API server.
The operator with the adapter installed (its default) is exercised by every end-to-end
test; tests/e2e/test_replication_e2e.py has one that checks it was installed.
"""

import asyncio
import contextlib
import copy
import inspect
import json
import logging
import sys
from importlib.metadata import version

import kopf
import kubernetes
import pytest
from kopf._cogs.clients import auth, watching
from kopf._cogs.structs import credentials, references
from kopf._core.reactor import queueing

from steward.constants import GROUP, VERSION
from steward.handlers import watchfilter
from support.samples import minimal_rule


def _event(metadata):
    return {"type": "MODIFIED", "object": {"metadata": metadata, "spec": {"a": 1}}}


def test_managed_fields_go_and_everything_else_stays():
    metadata = {
        "name": "x",
        "uid": "u",
        "finalizers": ["steward.lsst.io/finalizer"],
        "annotations": {"a": "b"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    }
    event = _event(metadata)
    expected = copy.deepcopy(event)
    del expected["object"]["metadata"]["managedFields"]
    assert watchfilter.strip_managed_fields(event) is event
    assert event == expected


@pytest.mark.parametrize(
    "event",
    [
        watching.Bookmark.LISTED,
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        {"type": "ERROR", "object": {"code": 410}},
        {"type": "ADDED"},
        _event({"name": "x"}),
    ],
)
def test_what_carries_no_managed_fields_passes_unchanged(event):
    before = copy.deepcopy(event)
    assert watchfilter.strip_managed_fields(event) is event
    assert event == before


def _keys(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


_BODY = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ReplicationRule",
    "metadata": {
        "name": "raw-to-ncsa",
        "namespace": "ops",
        "finalizers": ["steward.lsst.io/finalizer"],
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {"selector": {"dids": ["raw:ds-1"]}, "destination": "NCSA_DISK"},
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllRulesOK", "message": "m" * 80},
        ],
        "counts": {"OK": 1},
    },
}


def test_compacted_bodies_share_keys_and_short_strings_and_keep_their_containers():
    """Two events parsed apart (as two watch events are) end up sharing every key and each
    short string; long strings are left alone; the dicts and lists are the same objects."""
    events = [{"type": "MODIFIED", "object": json.loads(json.dumps(_BODY))} for _ in range(2)]
    status = events[0]["object"]["status"]
    conditions = status["conditions"]
    first, second = (watchfilter.compact_event(event)["object"] for event in events)
    expected = copy.deepcopy(_BODY)
    del expected["metadata"]["managedFields"]
    assert first == second == expected
    assert first["status"] is status
    assert status["conditions"] is conditions
    assert all(a is b for a, b in zip(_keys(first), _keys(second), strict=True))
    ready = first["status"]["conditions"][0], second["status"]["conditions"][0]
    assert ready[0]["reason"] is ready[1]["reason"]
    assert first["metadata"]["finalizers"][0] is second["metadata"]["finalizers"][0]
    assert ready[0]["message"] is not ready[1]["message"]  # 80 characters: not interned


def test_install_wraps_once(monkeypatch):
    original = watching.infinite_watch
    monkeypatch.setattr(watching, "infinite_watch", original)  # restored after the test
    assert watchfilter.install()
    wrapped = watching.infinite_watch
    assert wrapped is not original
    assert not watchfilter.install()
    assert watching.infinite_watch is wrapped


def test_kopf_is_the_version_the_adapter_was_checked_against():
    """The adapter wraps kopf internals checked in 1.45; pyproject pins below 1.46."""
    assert version("kopf").split(".")[:2] == ["1", "45"]


def test_kopf_still_reads_its_events_through_the_wrapped_function():
    """kopf's watcher must look ``infinite_watch`` up on its module at each call, with these
    keywords: if either changes, the stripping would stop or the watch would break."""
    assert "watching.infinite_watch(" in inspect.getsource(queueing.watcher)
    parameters = inspect.signature(watching.infinite_watch).parameters
    assert list(parameters) == [
        "settings",
        "resource",
        "namespace",
        "operator_paused",
        "_iterations",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


@pytest.fixture
def kopf_vault(control_plane, monkeypatch):
    """kopf's credentials for the real API server, as its login handler would store them."""
    # The client reads $KUBECONFIG once, at import: point its default at the test cluster's.
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(control_plane.kubeconfig)
    )
    monkeypatch.setattr(watching, "infinite_watch", watching.infinite_watch)
    default = kubernetes.client.Configuration.get_default_copy()
    info = kopf.login_via_client(
        logger=logging.getLogger(__name__), settings=kopf.OperatorSettings()
    )
    # login_via_client loads the kubeconfig as the client's default: put the default back.
    kubernetes.client.Configuration.set_default(default)
    return info


@pytest.mark.kube
def test_kopf_lists_and_watches_real_objects_compacted(kopf_vault, kube_api, namespace):
    objects = kubernetes.client.CustomObjectsApi(kube_api)
    objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "replicationrules", minimal_rule("stripped", namespace)
    )
    stored = objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "replicationrules", "stripped"
    )
    assert stored["metadata"]["managedFields"]  # the API server has them; kopf must not
    watchfilter.install()
    resource = references.Resource(
        group=GROUP, version=VERSION, plural="replicationrules", namespaced=True
    )

    async def seen():
        vault = credentials.Vault()
        await vault.populate({"test": kopf_vault})
        auth.vault_var.set(vault)
        events = []
        try:
            stream = watching.infinite_watch(
                settings=kopf.OperatorSettings(), resource=resource, namespace=namespace
            )
            async with asyncio.timeout(60), contextlib.aclosing(stream):
                async for event in stream:
                    if not isinstance(event, dict) or event["type"] == "BOOKMARK":
                        continue
                    events.append(event)
                    if event["type"] is None:  # listed: now change it, for a watch event
                        await asyncio.to_thread(
                            objects.patch_namespaced_custom_object,
                            GROUP,
                            VERSION,
                            namespace,
                            "replicationrules",
                            "stripped",
                            {"metadata": {"labels": {"edited": "yes"}}},
                        )
                    elif event["type"] == "MODIFIED":
                        break
        finally:
            await vault.close()
        return events

    listed, modified = asyncio.run(seen())
    assert listed["type"] is None
    assert modified["object"]["metadata"]["labels"] == {"edited": "yes"}
    for event in (listed, modified):
        assert event["object"]["metadata"]["name"] == "stripped"
        assert "managedFields" not in event["object"]["metadata"]
        assert event["object"]["spec"] == stored["spec"]
        assert all(key is sys.intern(key) for key in _keys(event["object"]))
