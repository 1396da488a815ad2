"""Names shared by every layer: the API group and version, finalizer, annotation prefixes.

The API version lives here and nowhere else, because CRDs evolve additively (kopf has no
conversion webhooks) and a second spelling of the version would drift.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "steward.lsst.io"
"""API group of every Steward custom resource."""

VERSION: Final = "v1alpha1"
"""The one served and stored version of every Steward custom resource."""

API_VERSION: Final = f"{GROUP}/{VERSION}"
"""``apiVersion`` of Steward resources."""

CATEGORY: Final = "steward"
"""``kubectl get steward`` lists every Steward resource."""

FINALIZER: Final = f"{GROUP}/finalizer"
"""Finalizer kopf puts on resources whose deletion has external consequences."""

FINALIZED_AT_ADMISSION: Final = ("replicationrules",)
"""Plurals whose new objects get `FINALIZER` from the mutating admission webhook.

kopf otherwise adds it in a patch of its own and handles the object at the next event: a
write and a round trip per new object, which a thousand ReplicationRules applied at once
pay a thousand times. Only kinds with a delete handler (kopf would remove the finalizer of
any other kind, in another patch)."""

ANNOTATION_PREFIX: Final = GROUP
"""Prefix of Steward's own annotations (git provenance, kopf progress storage)."""

FIELD_MANAGER: Final = "steward"
"""Server-side apply field manager of ``steward apply``."""

CACHE_DIR_ENV: Final = "STEWARD_CACHE_DIR"
"""Environment variable overriding the cache for built binaries and virtual environments."""

ANNOTATION_APPROVE_RELEASE: Final = f"{GROUP}/approve-release"
"""Annotation acknowledging a held release: its value must name the number of rules held
(``kubectl annotate rr/NAME steward.lsst.io/approve-release=N``); used once, then removed."""

CAMPAIGN_PRIORITY_CLASS_PREFIX: Final = "steward-campaign-"
"""PriorityClass of a campaign's pods: this prefix and its priority (``steward-campaign-high``);
``steward render`` ships one per level of `steward.models.campaign.Priority`."""
