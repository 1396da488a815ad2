"""What the refresh loop of a kind reads and writes in the Kubernetes API, outside kopf.

The loop (`steward.handlers.refresh`) does itself what kopf does for a timer: it lists the
objects a page at a time, merges each pass's status and metadata patch, posts the pass's
Events, and reads kopf's peering object to act only while this process leads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import urllib3
from kubernetes import client

from steward.constants import GROUP, VERSION
from steward.exceptions import NotFoundError
from steward.models import kind_info
from steward.storage.kubernetes import ResourceKey, api_client, kube_call, response_json

__all__ = ["PEERING_GROUP", "PEERING_PLURAL", "PEERING_VERSION", "RefreshObjects"]

_MERGE = "application/merge-patch+json"
PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
PEERING_PLURAL = "clusterkopfpeerings"
_COMPONENT = "steward"
_MESSAGE_LIMIT = 1024


def _drained(raw: object) -> None:
    """Read a raw response to its end and hand its connection back to the pool.

    A response asked for with ``_preload_content=False`` keeps its connection until it is
    read: left unread, every patch opened a new TLS connection (most of the loop's CPU in a
    py-spy profile at 6,000 resources).
    """
    response = cast("urllib3.BaseHTTPResponse", raw)
    response.drain_conn()
    response.release_conn()


def _read_or_none(what: str, call: Callable[[], object]) -> dict[str, Any] | None:
    """The JSON of one read, or None when the API server has no such object."""
    try:
        return response_json(kube_call(what, call))
    except NotFoundError:
        return None


class RefreshObjects:
    """One kind's objects, their patches and Events, and kopf's peering object."""

    def __init__(self, api: client.ApiClient, kind: str, *, owned: bool = False) -> None:
        self._api = api
        self._owned = owned
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.kind = kind
        self._plural = kind_info(kind).plural

    @classmethod
    def open(cls, kind: str, connections: int) -> RefreshObjects:
        """With an API client of its own, ``connections`` wide (closed by `close`).

        The loop's threads patch at once: sharing the process's small pool, each patch past
        it opened a new TLS connection, and the handshakes were most of the loop's CPU at
        3,000 resources (a py-spy profile of the steady state).
        """
        return cls(api_client(connections=connections), kind, owned=True)

    def close(self) -> None:
        """Close the API client if it is this object's own."""
        if self._owned:
            self._api.close()  # type: ignore[no-untyped-call]

    def pages(self, limit: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every object of the kind in every namespace, ``limit`` at a time.

        Read without the client's model deserialisation (`response_json`): a page of five
        hundred objects is one JSON parse. ``metadata.managedFields`` is dropped, as the watch
        filter drops it from kopf's events: each pass deep-copies its body.
        """
        token: str | None = None
        while True:
            page = response_json(kube_call(f"list {self.kind}", partial(self._page, limit, token)))
            items: list[dict[str, Any]] = page.get("items") or []
            for item in items:  # the API server's field ownership: never read, often half
                (item.get("metadata") or {}).pop("managedFields", None)
            yield items
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _page(self, limit: int, token: str | None) -> object:
        options: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if token:
            options["_continue"] = token
        return self._objects.list_cluster_custom_object(GROUP, VERSION, self._plural, **options)

    def get(self, key: ResourceKey) -> dict[str, Any] | None:
        """The object now, or None when it is gone."""
        return _read_or_none(
            f"get {key}",
            partial(
                self._objects.get_namespaced_custom_object,
                GROUP,
                VERSION,
                key.namespace or "",
                self._plural,
                key.name,
                _preload_content=False,
            ),
        )

    def merge(self, key: ResourceKey, patch: Mapping[str, Any]) -> None:
        """Merge a kopf-style patch: its ``status`` to the status, the rest to the object."""
        status = patch.get("status")
        rest = {k: v for k, v in patch.items() if k != "status"}
        for what, method, part in (
            (
                f"patch the status of {key}",
                self._objects.patch_namespaced_custom_object_status,
                {"status": status} if status else None,
            ),
            (f"patch {key}", self._objects.patch_namespaced_custom_object, rest or None),
        ):
            if part is not None:
                _drained(
                    kube_call(
                        what,
                        partial(
                            method,
                            GROUP,
                            VERSION,
                            key.namespace or "",
                            self._plural,
                            key.name,
                            part,
                            _content_type=_MERGE,
                            _preload_content=False,
                        ),
                    )
                )

    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event about ``body``, as kopf's poster would (same fields, same limit)."""
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event: dict[str, Any] = {
            "metadata": {"namespace": namespace, "generateName": f"{_COMPONENT}-event-"},
            "action": "Refresh",
            "type": type_,
            "reason": reason,
            "message": message[:_MESSAGE_LIMIT],
            "reportingComponent": _COMPONENT,
            "reportingInstance": _COMPONENT,
            "source": {"component": _COMPONENT},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        _drained(
            kube_call(
                f"post an Event about {self.kind}/{meta.get('name')}",
                lambda: self._core.create_namespaced_event(
                    namespace,
                    event,  # type: ignore[arg-type] # a plain dict, as kopf's poster sends it
                    _preload_content=False,
                ),
            )
        )

    def peering(self, name: str) -> dict[str, Any] | None:
        """The cluster-wide peering object of kopf named ``name``, or None when there is none."""
        return _read_or_none(
            f"get peering {name}",
            partial(
                self._objects.get_cluster_custom_object,
                PEERING_GROUP,
                PEERING_VERSION,
                PEERING_PLURAL,
                name,
                _preload_content=False,
            ),
        )
