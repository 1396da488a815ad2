"""The objects the admission webhooks' certificate lives in: its Secret and configurations.

All are shipped by ``steward render`` (the Secret empty), so the operator needs only ``get``
and ``patch`` on these names, never ``create``. The Secret is written with its
``resourceVersion`` as a precondition: when two processes start together, the second one's
write fails with 409 and it reads and serves the first one's certificate instead.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steward.exceptions import NotFoundError
from steward.storage.kubernetes import kube_call

__all__ = ["StaleSecretError", "WebhookObjects"]

_MERGE = "application/strategic-merge-patch+json"
"""The client would otherwise send a JSON Patch content type for a merge body."""


class StaleSecretError(Exception):
    """The Secret changed since it was read (another process wrote it first)."""


class WebhookObjects:
    """The webhooks' certificate Secret and their Validating and Mutating configurations."""

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
        return _bundles(configuration)

    def mutating_ca_bundles(self) -> dict[str, str] | None:
        """Like `ca_bundles`, for the MutatingWebhookConfiguration; None when not deployed.

        A deployment rendered before it existed has none: nothing then calls the mutating
        webhook, and kopf adds its finalizers itself (`steward.handlers.admission`).
        """
        try:
            configuration: Any = kube_call(
                f"get MutatingWebhookConfiguration {self.configuration}",
                lambda: self._admission.read_mutating_webhook_configuration(self.configuration),
            )
        except NotFoundError:
            return None
        return _bundles(configuration)

    def set_ca_bundle(self, ca: bytes) -> list[str]:
        """Put ``ca`` into every webhook of the configurations that lacks it; return their names.

        A strategic-merge patch keyed by webhook name: nothing else in the configurations
        (rules, failure policy, match conditions: what git says) is touched. The mutating
        configuration is left out where it is not deployed.
        """
        wanted = base64.b64encode(ca).decode()
        configurations = (
            (
                "ValidatingWebhookConfiguration",
                self.ca_bundles(),
                self._admission.patch_validating_webhook_configuration,
            ),
            (
                "MutatingWebhookConfiguration",
                self.mutating_ca_bundles() or {},
                self._admission.patch_mutating_webhook_configuration,
            ),
        )
        patched: list[str] = []
        for kind, bundles, patch in configurations:
            stale = [name for name, bundle in bundles.items() if bundle != wanted]
            if stale:
                body = _ca_patch(stale, wanted)
                kube_call(
                    f"patch {kind} {self.configuration}",
                    functools.partial(patch, self.configuration, body, _content_type=_MERGE),
                )
                patched.extend(stale)
        return patched


def _bundles(configuration: Any) -> dict[str, str]:  # noqa: ANN401 - the client's model
    """``caBundle`` of each webhook of a webhook configuration, by name."""
    return {
        webhook.name: webhook.client_config.ca_bundle or ""
        for webhook in configuration.webhooks or []
    }


def _ca_patch(names: list[str], bundle: str) -> dict[str, Any]:
    """A strategic-merge patch setting ``caBundle`` of the webhooks ``names``."""
    return {"webhooks": [{"name": name, "clientConfig": {"caBundle": bundle}} for name in names]}
