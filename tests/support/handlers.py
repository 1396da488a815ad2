"""kopf handlers called in process: kopf's own Memo, Body and Patch, and the real Rucio.

A test of the whole operator can only hope to hit a moment (a watch event during a handler,
a timer right after a change); calling the handlers makes it happen when the test says.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import pytest
from kopf._core.engines import posting

from steward.factory import ProcessContext
from steward.handlers.refresh import Tracked
from steward.storage.database import make_engine, upgrade

CLUSTER = "handler-tests"
"""The cluster identity of the handlers' process (its owner tags)."""


@pytest.fixture
def no_event_posting() -> Iterator[None]:
    """kopf posts Events through a queue its reactor drains; there is no reactor here."""
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    token = posting.settings_var.set(settings)
    yield
    posting.settings_var.reset(token)


@pytest.fixture
def memo(no_event_posting: None, rucio_server: Any, database_url: str) -> Iterator[kopf.Memo]:
    """The memo kopf gives every handler: this process's context and tracked objects."""
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    settings = rucio_server.settings(
        database_url=database_url, rucio_calls_per_second=10_000, refresh_interval=3600
    )
    # No cluster here: the Kubernetes client (for admission's lookups) is never used.
    context = ProcessContext.from_settings(
        settings, cluster_id=CLUSTER, kube_api=kubernetes.client.ApiClient()
    )
    state = kopf.Memo()
    state.context = context
    state.tracked = Tracked({"context": context})
    yield state
    context.close()


def applied(raw: dict[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    """The object after the API server merged ``patch`` (JSON merge patch) into it."""
    merged = copy.deepcopy(raw)

    def merge(target: dict[str, Any], change: dict[str, Any]) -> None:
        for key, value in change.items():
            if value is None:
                target.pop(key, None)
            elif isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = copy.deepcopy(value)

    merge(merged, dict(patch))
    return merged
