"""The batch API of the worker sites a multi-site campaign is dispatched to.

MultiKueue runs a multi-site campaign's Jobs in other clusters (the workers); the manager
cluster, where the Campaign lives, sees only the Jobs' status. Their pods, whose ended
attempts are the campaign's ledger, are at the worker. The manager already holds each
worker's credentials: the kubeconfig Secret its MultiKueueCluster names (key ``kubeconfig``,
in Kueue's namespace). `WorkerBatches` turns such a Secret into a `BatchStorage` for that
cluster, so the campaign service reads and records a worker's pods exactly as it does local
ones.

The operator's role then needs ``get`` on those Secrets in Kueue's namespace (the Role
``steward-multikueue`` that ``multiKueue.workerSecrets`` renders), and the kubeconfig's
identity at the worker what MultiKueue and Steward call there: the ClusterRole
``steward-multikueue-worker`` that a worker's ``multiKueue.managerServiceAccount`` renders
(`steward.services.render.WORKER_RULES`).
"""

from __future__ import annotations

import base64
import threading
from typing import Any, Final

import yaml
from kubernetes import client, config

from steward.exceptions import PermanentError
from steward.storage.batch import BatchStorage
from steward.storage.kubernetes import kube_call, response_json

__all__ = ["KUEUE_NAMESPACE", "WorkerBatches"]

KUEUE_NAMESPACE: Final = "kueue-system"
"""Where Kueue (and so MultiKueue) reads its worker kubeconfig Secrets."""

_KEY: Final = "kubeconfig"


class WorkerBatches:
    """A `BatchStorage` per worker kubeconfig Secret, made on first use and kept.

    A Secret whose content changed (rotated credentials) gets a new client on the next use.
    Thread-safe.
    """

    def __init__(
        self, api: client.ApiClient, *, namespace: str = KUEUE_NAMESPACE, workers: int = 4
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._workers = workers
        self._lock = threading.Lock()
        self._made: dict[str, tuple[str, client.ApiClient, BatchStorage]] = {}

    def batch(self, secret: str) -> BatchStorage:
        """The batch API of the cluster whose kubeconfig is in SECRET.

        Raises
        ------
        NotFoundError
            The Secret does not exist.
        PermanentError
            It holds no usable kubeconfig (key ``kubeconfig``).
        TransientError
            The local API server cannot be reached.
        """
        body = kube_call(
            f"get Secret {self._namespace}/{secret}",
            lambda: response_json(
                self._core.read_namespaced_secret(secret, self._namespace, _preload_content=False)
            ),
        )
        version = str(body["metadata"].get("resourceVersion", ""))
        with self._lock:
            made = self._made.get(secret)
            if made is not None and made[0] == version:
                return made[2]
            api = _client(secret, body)
            batch = BatchStorage(api, workers=self._workers)
            self._made[secret] = (version, api, batch)
        if made is not None:
            made[2].close()
            made[1].close()  # type: ignore[no-untyped-call]
        return batch

    def close(self) -> None:
        """Close every client made."""
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for _, api, batch in made:
            batch.close()
            api.close()  # type: ignore[no-untyped-call]


def _client(secret: str, body: dict[str, Any]) -> client.ApiClient:
    encoded = (body.get("data") or {}).get(_KEY)
    if not encoded:
        msg = f"Secret {secret} has no key {_KEY!r}: no kubeconfig for the worker"
        raise PermanentError(msg)
    try:
        loaded = yaml.safe_load(base64.b64decode(encoded))
        api: client.ApiClient = config.new_client_from_config_dict(loaded)  # type: ignore[no-untyped-call]
    except (ValueError, yaml.YAMLError, config.ConfigException) as error:
        msg = f"Secret {secret}: its kubeconfig is not usable ({error})"
        raise PermanentError(msg) from error
    return api
