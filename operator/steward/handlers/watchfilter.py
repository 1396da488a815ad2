"""Make the objects kopf watches smaller before kopf keeps them.

Two things are done to each watch event's object: ``metadata.managedFields`` is dropped, and
its keys and short strings are interned.

kopf keeps the last body it saw of every watched object (for its timers and daemons) until
the object is deleted; about half of a ReplicationRule's body is ``metadata.managedFields``,
the API server's record of which manager wrote which field (4.4 of 8.8 KiB a resource,
docs/replication.md, "Where the operator's memory goes"). Neither Steward nor kopf reads it:
Steward's handlers read ``spec``, ``status``, labels, annotations, the finalizers and the
deletion timestamp; kopf's finalizer, progress and diff-base logic read ``metadata.finalizers``,
``metadata.deletionTimestamp``, its annotations and ``status.kopf`` (the diff base ignores
``metadata`` altogether, `steward.handlers.startup.diffbase_storage`). kopf (1.45) has no
setting to drop a field, and no hook between its watch stream and the bodies it keeps.

Interning: every body's keys ("conditions", "lastTransitionTime", ...) and most of its short
values ("True", the reason of a condition, the namespace, the kind) are the same strings in
every object, but JSON parsing makes new string objects for each event, about 60 bytes
each. Sharing them through `sys.intern` took a ReplicationRule's kept body from about 9.1 to
about 4.3 KB (docs/replication.md, "Shared strings"). Interned strings are freed with the last
body that refers to them, so strings seen once (a uid, a timestamp) do not accumulate.

So `install` wraps the one function every kopf watcher reads its events from,
``kopf._cogs.clients.watching.infinite_watch`` (the initial listing and the watch stream
both come through it), and compacts each event's object before kopf sees it.
This is kopf's internal API: ``pyproject.toml`` pins kopf to the minor version this was
checked against (1.45), and ``tests/handlers/test_watchfilter.py`` fails when the wrapped
function's signature or its use by kopf's watcher changes, so an upgrade cannot silently
stop the filter or break the watch.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final, cast

from kopf._cogs.clients import watching

from steward.observability import get_logger

__all__ = ["compact_event", "install", "strip_managed_fields"]

_LOG = get_logger(__name__)

_MARK: Final = "__steward_compacts_watch_events__"
"""Attribute set on the wrapper, so a second `install` does not wrap it twice."""


def strip_managed_fields(event: Any) -> Any:  # noqa: ANN401 - a raw watch event or a kopf mark
    """Remove ``object.metadata.managedFields`` from a raw watch event, in place; return it.

    Anything else kopf's stream carries (its listing-done bookmark, an event without an
    object or without metadata) is returned unchanged.
    """
    if isinstance(event, dict):
        body = event.get("object")
        if isinstance(body, dict):
            metadata = body.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("managedFields", None)
    return event


INTERNED_LENGTH: Final = 64
"""String values up to this many characters are interned; longer ones (kopf's JSON of the
last handled spec, a condition's message) are rarely repeated."""


def _interned(value: Any) -> Any:  # noqa: ANN401 - any parsed JSON value
    """``value`` with its dicts' keys and its short strings interned, dicts and lists in place."""
    if isinstance(value, dict):
        items = [(sys.intern(key), _interned(item)) for key, item in value.items()]
        value.clear()
        value.update(items)
    elif isinstance(value, list):
        value[:] = [_interned(item) for item in value]
    elif isinstance(value, str) and len(value) <= INTERNED_LENGTH:
        return sys.intern(value)
    return value


def compact_event(event: Any) -> Any:  # noqa: ANN401 - a raw watch event or a kopf mark
    """Strip managedFields from a raw watch event's object and intern its strings, in place.

    The same dicts and lists are kept (only their contents change), so whatever kopf does
    with the event is unchanged; anything that is not an event with an object is returned
    as it is.
    """
    strip_managed_fields(event)
    if isinstance(event, dict) and isinstance(event.get("object"), dict):
        _interned(event["object"])
    return event


def install() -> bool:
    """Make every kopf watcher started from now on compact its events; False if already done."""
    original = watching.infinite_watch
    if getattr(original, _MARK, False):
        return False

    @functools.wraps(original)
    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:  # noqa: ANN401 - kopf's
        # aclosing: when kopf stops reading (a cancelled watcher), kopf's own generator is
        # closed at once, so its streaming block releases the connection as it would unwrapped.
        events = cast("AsyncGenerator[Any, None]", original(**kwargs))  # typed as an iterator
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                yield compact_event(event)

    setattr(infinite_watch, _MARK, True)
    watching.infinite_watch = infinite_watch
    _LOG.info("kopf watch events are compacted: no metadata.managedFields, strings interned")
    return True
