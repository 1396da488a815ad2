"""Who owns a Rucio rule or subscription: a short tag that names one resource of one cluster.

Every Rucio rule and subscription Steward creates carries an owner tag (in the rule's
comment, or as the subscription's name), and Steward finds what it owns by that tag alone, so
the tag must be unique across everything that shares the Rucio account: two clusters (a
development and a production one on one account) and two resources whose names only differ
in where a dash falls (``a-b/c`` and ``a/b-c``). It must also be short: Rucio keeps at most 250
characters of a comment and 64 of a subscription name, and a longer tag fails in Rucio's
database, for ever. So the tag is a hash of the cluster's identity and the resource's UID; the
readable name lives in Steward's audit trail and the resource's status, never in Rucio.

Decisions are made on the exact tag: a tag someone edited (keeping the prefix) is not ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

__all__ = [
    "SUBSCRIPTION_PREFIX",
    "TAG_LENGTH",
    "TAG_PREFIX",
    "owner_index",
    "owner_tag",
    "subscription_name",
]

TAG_PREFIX: Final = "steward:"
"""Start of every owner tag; rules with another comment are never Steward's."""

SUBSCRIPTION_PREFIX: Final = "steward-"
"""Start of every subscription name Steward creates."""

_DIGEST_CHARS: Final = 24
"""Hex digits of the hash kept: 96 bits, far beyond any chance of two resources colliding."""

TAG_LENGTH: Final = len(TAG_PREFIX) + _DIGEST_CHARS
"""Length of every owner tag (well under Rucio's 250-character comment)."""


def _digest(cluster_id: str, uid: str) -> str:
    if not cluster_id or not uid:
        msg = f"an owner tag needs a cluster id and a resource UID (got {cluster_id!r}, {uid!r})"
        raise ValueError(msg)
    return hashlib.sha256(f"{cluster_id}/{uid}".encode()).hexdigest()[:_DIGEST_CHARS]


def owner_tag(cluster_id: str, uid: str) -> str:
    """The comment Steward writes on every Rucio rule of one resource of one cluster.

    Parameters
    ----------
    cluster_id
        The cluster's identity (``Settings.cluster_id``, by default the UID of the
        ``kube-system`` namespace).
    uid
        ``metadata.uid`` of the resource, which a re-created resource of the same name does
        not share.
    """
    return TAG_PREFIX + _digest(cluster_id, uid)


def subscription_name(cluster_id: str, uid: str) -> str:
    """Name of the Rucio subscription placing new data for one resource (at most 64 chars)."""
    return SUBSCRIPTION_PREFIX + _digest(cluster_id, uid)


def owner_index(cluster_id: str, resources: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Map owner tags back to resources: ``{tag: label}`` for ``(uid, label)`` pairs.

    A tag is a one-way hash, so the way back is forward: list the resources that may own
    rules (from the API server), hash each UID with this cluster's identity, and look the tag
    up. A tag missing from the index belongs to another cluster or to a deleted resource.
    """
    return {owner_tag(cluster_id, uid): label for uid, label in resources}
