"""Drop ``metadata.managedFields`` from the objects kopf watches, before kopf keeps them.

kopf keeps the last body it saw of every watched object (for its timers and daemons) until
the object is deleted; about half of a ReplicationRule's body is ``metadata.managedFields``,
the API server's record of which manager wrote which field (4.4 of 8.8 KiB a resource,
docs/replication.md, "Where the operator's memory goes"). Neither Steward nor kopf reads it:
Steward's handlers read ``spec``, ``status``, labels, annotations, the finalizers and the
deletion timestamp; kopf's finalizer, progress and diff-base logic read ``metadata.finalizers``,
``metadata.deletionTimestamp``, its annotations and ``status.kopf`` (the diff base ignores
``metadata`` altogether, `steward.handlers.startup.diffbase_storage`). kopf (1.45) has no
setting to drop a field, and no hook between its watch stream and the bodies it keeps.

So `install` wraps the one function every kopf watcher reads its events from,
``kopf._cogs.clients.watching.infinite_watch`` (the initial listing and the watch stream
both come through it), and removes the field from each event's object before kopf sees it.
This is kopf's internal API: ``pyproject.toml`` pins kopf to the minor version this was
checked against (1.45), and ``tests/handlers/test_watchfilter.py`` fails when the wrapped
function's signature or its use by kopf's watcher changes, so an upgrade cannot silently
stop the stripping or break the watch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final, cast

from kopf._cogs.clients import watching

from steward.observability import get_logger

__all__ = ["install", "strip_managed_fields"]

_LOG = get_logger(__name__)

_MARK: Final = "__steward_strips_managed_fields__"
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


def install() -> bool:
    """Make every kopf watcher started from now on drop managedFields; False if already done."""
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
                yield strip_managed_fields(event)

    setattr(infinite_watch, _MARK, True)
    watching.infinite_watch = infinite_watch
    _LOG.info("kopf watch events are stripped of metadata.managedFields")
    return True
