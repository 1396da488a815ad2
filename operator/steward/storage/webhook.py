"""The two objects the admission webhook's certificate lives in: its Secret and configuration.

Both are shipped by ``steward render`` (the Secret empty), so the operator needs only ``get``
and ``patch`` on these two names, never ``create``. The Secret is written with its
``resourceVersion`` as a precondition: when two processes start together, the second one's
write fails with 409 and it reads and serves the first one's certificate instead.
"""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steward.storage.kubernetes import kube_call

__all__ = ["StaleSecretError", "WebhookObjects"]

_MERGE = "application/strategic-merge-patch+json"
"""The client would otherwise send a JSON Patch content type for a merge body."""


class StaleSecretError(Exception):
    """The Secret changed since it was read (another process wrote it first)."""


class WebhookObjects:
    """The webhook's certificate Secret and ValidatingWebhookConfiguration."""

    def __init__(
        self, api: client.ApiClient, namespace: str, secret: str, configuration: str
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._admission = client.AdmissionregistrationV1Api(api)
        self.namespace = namespace
        self.secret = secret
        self.configuration = configuration

    def read_secret(self) -> tuple[dict[str, bytes], str]:
        """The Secret's data (decoded) and its ``resourceVersion``.

        Raises
        ------
        NotFoundError
            The Secret was not deployed (``steward render`` ships it).
        """
        secret: Any = kube_call(
            f"get Secret {self.namespace}/{self.secret}",
            lambda: self._core.read_namespaced_secret(self.secret, self.namespace),
        )
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return data, str(secret.metadata.resource_version)

    def write_secret(self, data: dict[str, bytes], resource_version: str) -> None:
        """Replace the Secret's data, unless it changed since ``resource_version``.

        Raises
        ------
        StaleSecretError
            Someone else wrote it first; read it again.
        """
        body = {
            "metadata": {"resourceVersion": resource_version},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }

        def patch() -> None:
            try:
                self._core.patch_namespaced_secret(
                    self.secret, self.namespace, body, _content_type=_MERGE
                )
            except ApiException as exc:
                if exc.status == 409:  # noqa: PLR2004 - HTTP Conflict
                    raise StaleSecretError(self.secret) from None
                raise

        kube_call(f"patch Secret {self.namespace}/{self.secret}", patch)

    def ca_bundles(self) -> dict[str, str]:
        """``caBundle`` (base64 PEM, as stored) of each webhook of the configuration, by name."""
        configuration: Any = kube_call(
            f"get ValidatingWebhookConfiguration {self.configuration}",
            lambda: self._admission.read_validating_webhook_configuration(self.configuration),
        )
        return {
            webhook.name: webhook.client_config.ca_bundle or ""
            for webhook in configuration.webhooks or []
        }

    def set_ca_bundle(self, ca: bytes) -> list[str]:
        """Put ``ca`` into every webhook of the configuration that lacks it; return their names.

        A strategic-merge patch keyed by webhook name: nothing else in the configuration
        (rules, failure policy, match conditions: what git says) is touched.
        """
        wanted = base64.b64encode(ca).decode()
        stale = [name for name, bundle in self.ca_bundles().items() if bundle != wanted]
        if stale:
            body = {
                "webhooks": [{"name": name, "clientConfig": {"caBundle": wanted}} for name in stale]
            }
            kube_call(
                f"patch ValidatingWebhookConfiguration {self.configuration}",
                lambda: self._admission.patch_validating_webhook_configuration(
                    self.configuration, body, _content_type=_MERGE
                ),
            )
        return stale
