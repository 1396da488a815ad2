"""Steward's objects in the Kubernetes API: custom resources, and the audit witness ConfigMaps.

Custom resources: get, list, server-side apply, delete. ConfigMaps and Secrets: what the audit
trail keeps outside its database (checkpoints and the public key) and its signing key.

The kubernetes client is synchronous; callers on an event loop run these methods in a thread.
Its exceptions are converted here, once: 404 becomes ``None`` or :class:`NotFoundError`, 4xx
becomes :class:`PermanentError` carrying the API server's own message (it names the field),
and 5xx, 429 and connection failures become :class:`TransientError`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steward.constants import FIELD_MANAGER, GROUP, VERSION
from steward.exceptions import (
    AlreadyExistsError,
    ConfigurationError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from steward.models import KindInfo, kind_info

__all__ = [
    "ApiClient",
    "ConfigMaps",
    "KubeResources",
    "ResourceKey",
    "api_client",
    "cluster_identity",
    "kube_call",
    "response_json",
]

ApiClient = client.ApiClient
"""The Kubernetes API client type, for callers that may not import ``kubernetes`` themselves."""

T = TypeVar("T")

_APPLY = "application/apply-patch+yaml"
_MERGE = "application/merge-patch+json"


@dataclass(frozen=True, order=True)
class ResourceKey:
    """Identity of a Steward resource."""

    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace + '/' if self.namespace else ''}{self.name}"

    @classmethod
    def of(cls, body: dict[str, Any]) -> ResourceKey:
        """Return the key of a resource document."""
        meta = body.get("metadata", {})
        return cls(body["kind"], meta.get("namespace"), meta["name"])


def api_client(kubeconfig: Path | None = None, *, connections: int = 4) -> client.ApiClient:
    """Build an API client from a kubeconfig file, the in-cluster account, or $KUBECONFIG.

    ``connections`` sizes the client's connection pool: threads sharing the client beyond it
    wait for a connection (urllib3 warns and discards the surplus otherwise).

    Raises
    ------
    ConfigurationError
        There is no usable cluster configuration (no kubeconfig and not in a pod).
    """
    configuration = client.Configuration()
    # The config loaders are untyped in the kubernetes package.
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        where = kubeconfig or "$KUBECONFIG, ~/.kube/config or the pod's service account"
        msg = (
            f"no Kubernetes cluster to talk to ({where}): {error}; "
            "set KUBECONFIG or pass --kubeconfig"
        )
        raise ConfigurationError(msg) from None
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def cluster_identity(api: client.ApiClient) -> str:
    """The UID of the ``kube-system`` namespace: a cluster's identity, stable for its life.

    Kubernetes has no cluster id of its own; this namespace exists in every cluster, cannot be
    deleted, and its UID differs between clusters (the convention of, e.g., Istio and Argo).

    Raises
    ------
    TransientError
        The API server cannot be reached.
    PermanentError
        The identity may not read that namespace (then set ``STEWARD_CLUSTER_ID``).
    """
    core = client.CoreV1Api(api)
    try:
        namespace = core.read_namespace("kube-system")
    except ApiException as exc:
        if exc.status in {429, 500, 502, 503, 504} or exc.status == 0:
            raise TransientError(f"read namespace kube-system: {_message(exc)}") from None
        msg = (
            f"cannot read namespace kube-system for the cluster's identity ({_message(exc)}); "
            "set STEWARD_CLUSTER_ID"
        )
        raise PermanentError(msg) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"read namespace kube-system: {exc}") from None
    uid = namespace.metadata.uid if namespace.metadata is not None else None
    if not uid:
        raise PermanentError("namespace kube-system has no UID; set STEWARD_CLUSTER_ID")
    return str(uid)


class ConfigMaps:
    """ConfigMaps and Secrets of one namespace: small documents kept outside the database."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace

    def read(self, name: str) -> dict[str, str] | None:
        """The ConfigMap's data, or None if it does not exist."""
        try:
            found = kube_call(
                f"read ConfigMap {self.namespace}/{name}",
                lambda: self._core.read_namespaced_config_map(name, self.namespace),
            )
        except NotFoundError:
            return None
        return dict(found.data or {})

    def merge(self, name: str, data: Mapping[str, str | None], labels: Mapping[str, str]) -> None:
        """Add or replace keys of the ConfigMap (None removes a key), creating it if missing.

        A JSON merge patch touches only the keys given, so what others wrote stays as it is.
        """
        what = f"write ConfigMap {self.namespace}/{name}"
        patch = {"metadata": {"labels": dict(labels)}, "data": dict(data)}
        try:
            kube_call(
                what,
                lambda: self._core.patch_namespaced_config_map(
                    name, self.namespace, patch, _content_type=_MERGE
                ),
            )
        except NotFoundError:
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=name, labels=dict(labels)),
                data={k: v for k, v in data.items() if v is not None},
            )
            try:
                kube_call(
                    what, lambda: self._core.create_namespaced_config_map(self.namespace, body)
                )
            except PermanentError as error:
                if "already exists" not in str(error):
                    raise
                # Created by someone else in between: patch it after all.
                kube_call(
                    what,
                    lambda: self._core.patch_namespaced_config_map(
                        name, self.namespace, patch, _content_type=_MERGE
                    ),
                )

    def read_secret(self, name: str, key: str) -> bytes:
        """One value of a Secret, decoded.

        Raises
        ------
        NotFoundError
            The Secret or the key does not exist.
        """
        secret = kube_call(
            f"read Secret {self.namespace}/{name}",
            lambda: self._core.read_namespaced_secret(name, self.namespace),
        )
        value = (secret.data or {}).get(key)
        if value is None:
            msg = f"Secret {self.namespace}/{name} has no key {key!r}"
            raise NotFoundError(msg)
        return base64.b64decode(value)


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    return str(body.get("message") or exc.reason or exc)


def kube_call(what: str, call: Callable[[], T]) -> T:
    """Run one API call, mapping its failures to Steward's errors (see the module docstring).

    409 (the object exists) becomes :class:`AlreadyExistsError`.
    """
    try:
        return call()
    except ApiException as exc:
        if exc.status == 404:  # noqa: PLR2004 - HTTP status
            raise NotFoundError(f"{what}: not found ({_message(exc)})") from None
        if exc.status == 409:  # noqa: PLR2004 - HTTP status
            raise AlreadyExistsError(f"{what}: {_message(exc)}") from None
        if "failed to create typed patch object" in _message(exc):
            # Server-side apply answers 500 for a body that does not fit the schema.
            raise PermanentError(f"{what}: {_message(exc)}") from None
        if exc.status in {429, 500, 502, 503, 504} or exc.status == 0:
            raise TransientError(f"{what}: {_message(exc)}", retry_after=5) from None
        raise PermanentError(f"{what}: {_message(exc)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"{what}: cannot reach the API server: {exc}") from None


def response_json(raw: object) -> dict[str, Any]:
    """The JSON body of a call made with ``_preload_content=False``.

    Reading the raw body skips the client's model deserialisation, which costs about a
    millisecond per object: too much for lists of thousands of pods.
    """
    response = cast("urllib3.BaseHTTPResponse", raw)
    return cast("dict[str, Any]", json.loads(response.data))


class KubeResources:
    """Steward custom resources through one API client."""

    def __init__(self, api: client.ApiClient) -> None:
        self._objects = client.CustomObjectsApi(api)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return kube_call(what, call)

    def _call_json(self, what: str, call: Callable[[], object]) -> dict[str, Any]:
        return cast("dict[str, Any]", self._call(what, call))

    def get(self, key: ResourceKey) -> dict[str, Any] | None:
        """Return the live object, or None if it does not exist."""
        info = kind_info(key.kind)
        try:
            return self._call_json(
                f"get {key}",
                lambda: (
                    self._objects.get_namespaced_custom_object(
                        GROUP, VERSION, key.namespace or "", info.plural, key.name
                    )
                    if info.scope == "Namespaced"
                    else self._objects.get_cluster_custom_object(
                        GROUP, VERSION, info.plural, key.name
                    )
                ),
            )
        except NotFoundError:
            return None

    def list(self, kind: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Every object of ``kind`` in every namespace, optionally filtered by labels."""
        info = kind_info(kind)
        result = self._call_json(
            f"list {kind}",
            lambda: self._objects.list_cluster_custom_object(
                GROUP, VERSION, info.plural, label_selector=label_selector
            ),
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def apply(self, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``body`` as field manager ``steward`` (forcing conflicts).

        Unknown fields are errors (``fieldValidation=Strict``), so a typo that slipped past
        ``steward validate`` is still refused rather than silently pruned.
        """
        key = ResourceKey.of(body)
        info = kind_info(key.kind)
        options: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "field_validation": "Strict",
            "_content_type": _APPLY,
        }
        if dry_run:
            options["dry_run"] = "All"
        return self._call(f"apply {key}", lambda: self._apply(info, key, body, options))

    def _apply(
        self, info: KindInfo, key: ResourceKey, body: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        # The generated client maps only HTTP 200 to a body, but apply answers 201 when it
        # creates: read the raw response instead of losing the created object.
        options = {**options, "_preload_content": False}
        if info.scope == "Namespaced":
            result = self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, key.namespace or "", info.plural, key.name, body, **options
            )
        else:
            result = self._objects.patch_cluster_custom_object(
                GROUP, VERSION, info.plural, key.name, body, **options
            )
        return response_json(result)

    def delete(self, key: ResourceKey) -> None:
        """Delete the object; finalizers (the operator's) decide what happens outside."""
        info = kind_info(key.kind)
        self._call(
            f"delete {key}",
            lambda: (
                self._objects.delete_namespaced_custom_object(
                    GROUP, VERSION, key.namespace or "", info.plural, key.name
                )
                if info.scope == "Namespaced"
                else self._objects.delete_cluster_custom_object(
                    GROUP, VERSION, info.plural, key.name
                )
            ),
        )
