"""What Steward reads from and sends to Rucio: rules, subscriptions, files, RSE flags.

Units follow Rucio: rule lifetimes are seconds (fields are `datetime.timedelta`), subscription
lifetimes are days, sizes are bytes.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, Literal

from steward.exceptions import RucioPermanentError
from steward.models.replication import RuleState
from steward.storage.rucio.callpath import canonical_expression, seconds, utc

__all__ = [
    "DEFAULT_ACTIVITY",
    "UNSET",
    "AddedRules",
    "Availability",
    "DIDEntry",
    "DatasetReplica",
    "File",
    "FileReplica",
    "Lock",
    "Rule",
    "RuleSpec",
    "RuleState",
    "SiteRegistration",
    "Subscription",
    "SubscriptionSpec",
    "Unset",
]

DEFAULT_ACTIVITY: Final = "User Subscriptions"
"""Rucio's default rule activity; subscriptions need one spelled out (the transmogrifier's own
default, ``default``, is not in Rucio's list of activities)."""


class Unset(Enum):
    """The type of `UNSET`."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET
"""Marks an `RucioStorage.update_rule` option as "leave as is" (None means "no value")."""


def _interned(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


@dataclass(frozen=True, slots=True)
class Rule:
    """A Rucio replication rule, as Steward reads it."""

    id: str
    scope: str
    name: str
    account: str
    rse_expression: str
    copies: int
    state: RuleState
    locks_ok: int = 0
    locks_replicating: int = 0
    locks_stuck: int = 0
    bytes: int | None = None
    """Size of the DID, when Rucio knows it."""
    expires_at: datetime | None = None
    comment: str | None = None
    child_rule_id: str | None = None
    locked: bool = False
    grouping: str = "DATASET"
    activity: str | None = None
    priority: int = 3
    source_replica_expression: str | None = None
    purge_replicas: bool = False
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def did(self) -> str:
        """``scope:name`` of the rule's DID."""
        return f"{self.scope}:{self.name}"

    @classmethod
    def from_rucio(cls, data: Mapping[str, Any]) -> Rule:
        """Build from a rule dictionary of Rucio's client.

        The strings most rules repeat (scope, account, expression, owner tag, activity) are
        interned: the rule snapshot holds every rule of the account, and JSON parsing gives
        each rule its own copies of them.
        """
        return cls(
            id=data["id"],
            scope=sys.intern(data["scope"]),
            name=data["name"],
            account=sys.intern(data["account"]),
            rse_expression=sys.intern(data["rse_expression"]),
            copies=int(data["copies"]),
            state=RuleState(data["state"]),
            locks_ok=int(data.get("locks_ok_cnt") or 0),
            locks_replicating=int(data.get("locks_replicating_cnt") or 0),
            locks_stuck=int(data.get("locks_stuck_cnt") or 0),
            bytes=data.get("bytes"),
            expires_at=utc(data.get("expires_at")),
            comment=_interned(data.get("comments")),
            child_rule_id=data.get("child_rule_id"),
            locked=bool(data.get("locked")),
            grouping=sys.intern(str(data.get("grouping") or "DATASET")),
            activity=_interned(data.get("activity")),
            priority=int(data.get("priority") or 3),
            source_replica_expression=_interned(data.get("source_replica_expression")),
            purge_replicas=bool(data.get("purge_replicas")),
            error=data.get("error"),
            created_at=utc(data.get("created_at")),
            updated_at=utc(data.get("updated_at")),
        )


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a rule should be; the input of `RucioStorage.add_rules`."""

    rse_expression: str
    """Destination; canonicalised before it is sent."""
    copies: int = 1
    lifetime: timedelta | None = None
    """Rule lifetime (Rucio counts seconds); None: forever."""
    grouping: Literal["ALL", "DATASET", "NONE"] = "DATASET"
    priority: int = 3
    activity: str = DEFAULT_ACTIVITY
    source_replica_expression: str | None = None
    comment: str | None = None
    """Steward tags its rules here, so `RucioStorage.list_rules` finds them in one call."""
    locked: bool = False
    purge_replicas: bool = False
    ask_approval: bool = False
    asynchronous: bool = False
    ignore_availability: bool = False
    weight: str | None = None

    def __post_init__(self) -> None:
        if self.copies < 1:
            msg = f"a rule needs at least one copy, not {self.copies}"
            raise RucioPermanentError(msg)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``add_replication_rule`` (expression canonicalised)."""
        return {
            "copies": self.copies,
            "rse_expression": canonical_expression(self.rse_expression),
            "lifetime": seconds(self.lifetime),
            "grouping": self.grouping,
            "priority": self.priority,
            "activity": self.activity,
            "source_replica_expression": self.source_replica_expression,
            "comment": self.comment,
            "locked": self.locked,
            "purge_replicas": self.purge_replicas,
            "ask_approval": self.ask_approval,
            "asynchronous": self.asynchronous,
            "ignore_availability": self.ignore_availability,
            "weight": self.weight,
        }

    def subscription_rule(self) -> dict[str, Any]:
        """Return the rule as a subscription carries it (the transmogrifier's format)."""
        rule: dict[str, Any] = {
            "copies": self.copies,
            "rse_expression": canonical_expression(self.rse_expression),
            "grouping": self.grouping,
            # The transmogrifier compares these two with the string "True".
            "locked": str(self.locked),
            "purge_replicas": str(self.purge_replicas),
        }
        rule["activity"] = self.activity
        optional = {
            "lifetime": seconds(self.lifetime),
            "source_replica_expression": self.source_replica_expression,
            "comments": self.comment,
            "weight": self.weight,
        }
        rule.update({key: value for key, value in optional.items() if value is not None})
        return rule


@dataclass(frozen=True, slots=True)
class AddedRules:
    """Result of `RucioStorage.add_rules`."""

    rule_ids: dict[str, str]
    """Rule id per DID (``scope:name``)."""
    created: frozenset[str] = frozenset()
    """DIDs whose rule this call created."""
    existing: Mapping[str, Rule] = field(default_factory=dict)
    """DIDs that already had a rule of this account, expression and copies, with that rule
    as found (unchanged: who made it is in its comment)."""

    @property
    def adopted(self) -> frozenset[str]:
        """DIDs whose rule existed already (see ``existing``)."""
        return frozenset(self.existing)


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A Rucio subscription: rules for new DIDs matching a filter (see the transmogrifier)."""

    name: str
    filter: Mapping[str, Any]
    """Rucio's filter: ``scope`` (list of regexes), ``did_type``, ``pattern``, metadata keys."""
    rules: Sequence[RuleSpec]
    comments: str = ""
    lifetime: timedelta | None = None
    """How long the subscription lives (Rucio counts whole days, rounded up); None: forever."""
    priority: int = 3

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by ``add_subscription`` and ``update_subscription``."""
        days = None if self.lifetime is None else math.ceil(self.lifetime / timedelta(days=1))
        return {
            "filter_": dict(self.filter),
            "replication_rules": [rule.subscription_rule() for rule in self.rules],
            "comments": self.comments,
            "lifetime": days if days is not None else False,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as Rucio reports it."""

    id: str
    name: str
    account: str
    filter: dict[str, Any]
    rules: list[dict[str, Any]]
    state: str
    comments: str | None
    priority: int | None

    @classmethod
    def from_rucio(cls, data: Mapping[str, Any]) -> Subscription:
        """Build from a subscription dictionary (filter and rules arrive as JSON text)."""

        def decoded(value: Any) -> Any:  # noqa: ANN401 - JSON
            return json.loads(value) if isinstance(value, str) else value

        return cls(
            id=data["id"],
            name=data["name"],
            account=data["account"],
            filter=decoded(data.get("filter")) or {},
            rules=decoded(data.get("replication_rules")) or [],
            state=str(data.get("state")),
            comments=data.get("comments"),
            priority=data.get("policyid"),
        )


@dataclass(frozen=True, slots=True)
class File:
    """A file replica to register: name, size and checksums, as Rucio records them."""

    did: str
    bytes: int
    adler32: str = "00000001"
    meta: Mapping[str, Any] = field(default_factory=dict)
    md5: str | None = None
    """MD5 (32 hex digits), when known; Rucio keeps it beside the Adler-32."""


@dataclass(frozen=True, slots=True)
class DIDEntry:
    """One DID of a listing, with the size Rucio keeps for it."""

    did: str
    """``scope:name``."""
    type: str
    """``DATASET``, ``CONTAINER`` or ``FILE``."""
    bytes: int | None = None
    """Size (of every file, for a collection); None when Rucio has not counted it."""
    length: int | None = None
    """Files in a collection; None for a file or when Rucio has not counted them."""

    @classmethod
    def from_rucio(cls, row: Mapping[str, Any]) -> DIDEntry:
        """Build from a ``list_dids(long=True)`` row."""
        return cls(
            did=f"{row['scope']}:{row['name']}",
            type=str(row.get("did_type") or row.get("type") or ""),
            bytes=row.get("bytes"),
            length=row.get("length"),
        )


@dataclass(frozen=True, slots=True)
class DatasetReplica:
    """Where a dataset's files are: one RSE, counted from its file replicas."""

    rse: str
    files: int
    """Files of the dataset."""
    available_files: int
    """Of those, files with an AVAILABLE replica on this RSE."""
    bytes: int
    available_bytes: int
    state: str
    """``AVAILABLE`` when every file is there, else ``UNAVAILABLE`` (Rucio's names)."""

    @classmethod
    def from_rucio(cls, row: Mapping[str, Any]) -> DatasetReplica:
        """Build from a ``list_dataset_replicas`` row."""
        return cls(
            rse=str(row["rse"]),
            files=int(row.get("length") or 0),
            available_files=int(row.get("available_length") or 0),
            bytes=int(row.get("bytes") or 0),
            available_bytes=int(row.get("available_bytes") or 0),
            state=str(row.get("state") or ""),
        )


@dataclass(frozen=True, slots=True)
class FileReplica:
    """A file as the catalogue knows it, and its replicas by RSE."""

    did: str
    bytes: int | None
    adler32: str | None
    md5: str | None
    states: Mapping[str, str] = field(default_factory=dict)
    """Replica state by RSE (``AVAILABLE``, ``COPYING``, ``UNAVAILABLE``...)."""
    pfns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Physical file names by RSE, best protocol first."""

    @classmethod
    def from_rucio(cls, row: Mapping[str, Any]) -> FileReplica:
        """Build from a ``list_replicas`` row."""
        return cls(
            did=f"{row['scope']}:{row['name']}",
            bytes=row.get("bytes"),
            adler32=row.get("adler32"),
            md5=row.get("md5"),
            states=dict(row.get("states") or {}),
            pfns={rse: tuple(pfns) for rse, pfns in (row.get("rses") or {}).items()},
        )

    def available_on(self) -> frozenset[str]:
        """RSEs holding an AVAILABLE replica."""
        return frozenset(rse for rse, state in self.states.items() if state == "AVAILABLE")


@dataclass(frozen=True, slots=True)
class Lock:
    """A replica lock: one rule holds one file's replica on one RSE (Rucio's ``ReplicaLock``).

    A replica with no lock left is what Rucio may delete: the judge-cleaner gives it a
    tombstone and the reaper removes it.
    """

    did: str
    """The file, ``scope:name``."""
    rse: str
    rule_id: str
    state: str
    """Rucio's lock state: OK, REPLICATING or STUCK."""


@dataclass(frozen=True, slots=True)
class Availability:
    """An RSE's availability flags."""

    read: bool = True
    write: bool = True
    delete: bool = True


@dataclass(frozen=True, slots=True)
class SiteRegistration:
    """What `RucioStorage.register_site` changed; empty ``changes`` when already converged."""

    changes: tuple[str, ...]
    """One line per write, e.g. ``NCSA_TAPE: attribute tier=1`` (for the audit trail)."""
    pending: tuple[str, ...]
    """Distances not set because the other site or RSE is not registered yet."""
