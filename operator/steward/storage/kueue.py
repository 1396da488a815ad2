"""Kueue's objects in the Kubernetes API: server-side apply, list by label, get, delete.

Kueue (``kueue.x-k8s.io``) is the batch queueing engine Steward renders quotas and queues
for. Its kinds are reached here, once, through the same error mapping as Steward's own
(`kube_call`): a missing Kueue installation shows as `NotFoundError` on the kind's path.
"""

from __future__ import annotations

import json
from typing import Any, Final, cast

import urllib3
from kubernetes import client

from steward.constants import FIELD_MANAGER
from steward.exceptions import NotFoundError
from steward.storage.kubernetes import kube_call

__all__ = ["KUEUE_API_VERSION", "KUEUE_GROUP", "KUEUE_KINDS", "KueueStorage"]

KUEUE_GROUP: Final = "kueue.x-k8s.io"
KUEUE_VERSION: Final = "v1beta2"
KUEUE_API_VERSION: Final = f"{KUEUE_GROUP}/{KUEUE_VERSION}"

KUEUE_KINDS: Final[dict[str, tuple[str, bool]]] = {
    "ResourceFlavor": ("resourceflavors", False),
    "ClusterQueue": ("clusterqueues", False),
    "LocalQueue": ("localqueues", True),
    "WorkloadPriorityClass": ("workloadpriorityclasses", False),
    "AdmissionCheck": ("admissionchecks", False),
    "MultiKueueConfig": ("multikueueconfigs", False),
    "MultiKueueCluster": ("multikueueclusters", False),
    "Workload": ("workloads", True),
}
"""Kind -> (plural, namespaced) of the Kueue kinds Steward reads or writes."""

_APPLY: Final = "application/apply-patch+yaml"


def _where(kind: str) -> tuple[str, bool]:
    try:
        return KUEUE_KINDS[kind]
    except KeyError:
        raise ValueError(f"{kind} is not a Kueue kind Steward handles") from None


class KueueStorage:
    """Kueue objects through one API client (synchronous: call from a worker thread)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._objects = client.CustomObjectsApi(api)

    def apply(
        self,
        body: dict[str, Any],
        *,
        field_manager: str = FIELD_MANAGER,
        status: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply BODY as FIELD_MANAGER (``steward``), forcing conflicts.

        With STATUS, BODY's ``status`` is applied to the status subresource: how an
        admission check controller writes its check's state into a Workload and its own
        AdmissionCheck's ``Active`` condition. A second field manager owns only the fields it
        applies, so a partial BODY (a ClusterQueue's admission checks) leaves the fields of
        ``steward``'s full rendering alone, and ``steward`` re-applying leaves it alone.

        Raises
        ------
        NotFoundError
            Kueue's CRDs are not installed in the cluster.
        PermanentError
            The API server or Kueue's webhook refused the object; the message says why.
        TransientError
            The API server (or the webhook) could not be reached.
        """
        kind = body["kind"]
        plural, namespaced = _where(kind)
        meta = body["metadata"]
        where = f"{meta.get('namespace', '') + '/' if namespaced else ''}{meta['name']}"
        what = f"apply {kind} {where}{' status' if status else ''}"
        options: dict[str, Any] = {
            "field_manager": field_manager,
            "force": True,
            "_content_type": _APPLY,
            "_preload_content": False,
        }

        def call() -> dict[str, Any]:
            if namespaced:
                patch = (
                    self._objects.patch_namespaced_custom_object_status
                    if status
                    else self._objects.patch_namespaced_custom_object
                )
                raw = patch(
                    KUEUE_GROUP,
                    KUEUE_VERSION,
                    meta["namespace"],
                    plural,
                    meta["name"],
                    body,
                    **options,
                )
            else:
                patch_cluster = (
                    self._objects.patch_cluster_custom_object_status
                    if status
                    else self._objects.patch_cluster_custom_object
                )
                raw = patch_cluster(
                    KUEUE_GROUP, KUEUE_VERSION, plural, meta["name"], body, **options
                )
            response = cast("urllib3.BaseHTTPResponse", raw)
            return cast("dict[str, Any]", json.loads(response.data))

        return kube_call(what, call)

    def list(
        self, kind: str, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of KIND (in NAMESPACE, or everywhere), optionally filtered by labels."""
        plural, namespaced = _where(kind)

        def call() -> object:
            if namespaced and namespace is not None:
                return self._objects.list_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace, plural, label_selector=label_selector
                )
            return self._objects.list_cluster_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, plural, label_selector=label_selector
            )

        result = cast("dict[str, Any]", kube_call(f"list {kind}", call))
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        plural, namespaced = _where(kind)

        def call() -> object:
            if namespaced:
                return self._objects.get_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace or "", plural, name
                )
            return self._objects.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, plural, name)

        try:
            return cast("dict[str, Any]", kube_call(f"get {kind} {name}", call))
        except NotFoundError:
            return None

    def patch(
        self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None
    ) -> None:
        """Merge-patch one object (e.g. a Workload's ``spec.active``)."""
        plural, namespaced = _where(kind)

        def call() -> object:
            if namespaced:
                return self._objects.patch_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace or "", plural, name, patch
                )
            return self._objects.patch_cluster_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, plural, name, patch
            )

        kube_call(f"patch {kind} {name}", call)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one object; gone already is fine (Kueue's finalizers decide the rest)."""
        plural, namespaced = _where(kind)

        def call() -> object:
            if namespaced:
                return self._objects.delete_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace or "", plural, name
                )
            return self._objects.delete_cluster_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, plural, name
            )

        try:
            kube_call(f"delete {kind} {name}", call)
        except NotFoundError:
            return
