"""``steward find``: data by metadata, where it is, and which Steward resources keep it there.

Use case 5 of 000_923afb1a7a641d92.txt: "find file(s) from the data backbone based upon
metadata (e.g., visit, ccd, filter)"; LDM-230 5.1.2.2.2: "obtaining a logical file name through
querying metadata", then "selecting a distinct instance of the file from possibly many
replicas". Rucio's catalogue answers both; this service joins its answers into one line per
DID: its size, its replicas by RSE, and the rules on it with their owners.

A rule's owner is in its comment as an owner tag (`steward.services.ownership`), a one-way
hash of the cluster's identity and the owning resource's UID. The caller passes the index of
this cluster's resources (`ownership.owner_index`), which turns tags back into names.

Results stream: Rucio streams the DID listing, read a page at a time, and the lookups
(replicas, rules) are made as the caller consumes results, so a scope of a million datasets
costs the memory of one page and the first line appears after its own lookups, not after all
of them. `FindStats` counts pages and DIDs, for tests and for the command's summary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from steward.exceptions import PermanentError
from steward.models import KINDS
from steward.services.ownership import TAG_PREFIX, owner_index
from steward.storage.kubernetes import KubeResources
from steward.storage.rucio import (
    DatasetReplica,
    DIDEntry,
    RucioStorage,
    Rule,
    RuleState,
    batched,
)

__all__ = ["FindQuery", "FindService", "FindStats", "Found", "RuleOnData", "cluster_owners"]

FoundType = Literal["dataset", "file"]

DEFAULT_PAGE_SIZE = 100
"""DIDs read from Rucio's listing per page (and files whose replicas are listed per call)."""


def cluster_owners(kube: KubeResources, cluster_id: str) -> dict[str, str]:
    """Owner tag to ``Kind/namespace/name`` for every Steward resource of the cluster.

    Tags are one-way hashes of the cluster's identity and a resource's UID, so the way back
    is to list the resources (every kind: any may own rules) and hash their UIDs.
    """
    resources = []
    for info in KINDS:
        for body in kube.list(info.kind):
            meta = body.get("metadata") or {}
            where = f"{meta['namespace']}/" if meta.get("namespace") else ""
            resources.append((str(meta.get("uid") or ""), f"{info.kind}/{where}{meta['name']}"))
    return owner_index(cluster_id, [(uid, label) for uid, label in resources if uid])


@dataclass(frozen=True)
class FindQuery:
    """What to look for."""

    scopes: Sequence[str] | None = None
    """Scopes to search; every scope when None."""
    match: Mapping[str, str] = field(default_factory=dict)
    """Metadata every result must have (``datatype=raw``, ``visit=2026112200042``)."""
    rse_expression: str | None = None
    """Only data with a replica on an RSE this expression selects."""
    did_type: FoundType = "dataset"
    """Datasets (what policies place) or files."""


@dataclass(frozen=True)
class RuleOnData:
    """A Rucio rule on a found DID, and who owns it."""

    id: str
    rse_expression: str
    state: RuleState
    account: str
    owner: str | None
    """``Kind/namespace/name`` of the Steward resource owning the rule, when known."""
    steward: bool
    """Whether the rule carries a Steward owner tag (known or not)."""
    comment: str | None
    expires_at: datetime | None

    def describe_owner(self) -> str:
        """The owner for people: a resource, an unknown Steward tag, or not Steward's."""
        if self.owner is not None:
            return self.owner
        if self.steward:
            return f"{self.comment} (no resource of this cluster has this tag)"
        return f"not Steward's ({self.account}{': ' + self.comment if self.comment else ''})"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "rseExpression": self.rse_expression,
            "state": self.state.value,
            "account": self.account,
            "owner": self.owner,
            "steward": self.steward,
            "comment": self.comment,
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
        }


@dataclass(frozen=True)
class Found:
    """One DID found: size, replicas by RSE, rules and owners."""

    did: str
    type: str
    bytes: int | None
    files: int | None
    replicas: tuple[DatasetReplica, ...]
    rules: tuple[RuleOnData, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (one line of ``steward find --format json``)."""
        return {
            "did": self.did,
            "type": self.type,
            "bytes": self.bytes,
            "files": self.files,
            "replicas": [
                {
                    "rse": r.rse,
                    "state": r.state,
                    "files": r.files,
                    "availableFiles": r.available_files,
                    "bytes": r.bytes,
                    "availableBytes": r.available_bytes,
                }
                for r in self.replicas
            ],
            "rules": [rule.to_json() for rule in self.rules],
        }


@dataclass
class FindStats:
    """What one search did so far."""

    pages: int = 0
    """Pages of DIDs looked up."""
    listed: int = 0
    """DIDs Rucio listed as matching the metadata."""
    found: int = 0
    """DIDs returned (after the RSE filter)."""


class FindService:
    """Searches Rucio's catalogue and joins replicas and rule owners to each result.

    Parameters
    ----------
    rucio
        The Rucio storage.
    owners
        Owner tag to ``Kind/namespace/name`` for this cluster's resources
        (`steward.services.ownership.owner_index`); empty when no cluster is reachable.
    page_size
        DIDs per page of lookups.
    """

    def __init__(
        self,
        rucio: RucioStorage,
        owners: Mapping[str, str],
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if page_size < 1:
            msg = f"page size must be at least 1, not {page_size}"
            raise ValueError(msg)
        self.rucio = rucio
        self.owners = dict(owners)
        self.page_size = page_size
        self.stats = FindStats()

    def find(self, query: FindQuery) -> Iterator[Found]:
        """Yield every DID matching ``query``, a page of lookups at a time.

        Raises
        ------
        PermanentError
            The RSE expression selects no RSE, or Rucio refuses the metadata filter.
        RucioTransientError
            Rucio is unreachable (results already yielded stand; search again).
        """
        wanted = self._rses(query.rse_expression)
        scopes = query.scopes if query.scopes is not None else self.rucio.list_scopes()
        for scope in scopes:
            listed = self.rucio.iter_dids(
                scope, query.match, did_type=query.did_type, page_size=self.page_size
            )
            for page in batched(listed, self.page_size):
                self.stats.pages += 1
                self.stats.listed += len(page)
                for found in self._look_up(page, query.did_type, wanted):
                    self.stats.found += 1
                    yield found

    def _rses(self, expression: str | None) -> frozenset[str] | None:
        if expression is None:
            return None
        rses = frozenset(self.rucio.list_rses(expression))
        if not rses:
            msg = f"RSE expression {expression!r} selects no RSE in Rucio"
            raise PermanentError(msg)
        return rses

    def _look_up(
        self, page: list[DIDEntry], did_type: FoundType, wanted: frozenset[str] | None
    ) -> Iterator[Found]:
        """Join replicas and rules to each DID, lazily.

        A dataset's lookups are made when the caller asks for it (a call each for replicas
        and rules); a page of files' replicas takes one call.
        """
        files = self._file_replicas(page) if did_type == "file" else None
        for entry in page:
            where = (
                files.get(entry.did, ())
                if files is not None
                else tuple(self.rucio.list_dataset_replicas(entry.did))
            )
            if wanted is not None and not any(r.rse in wanted for r in where):
                continue
            rules = tuple(self._rule(rule) for rule in self.rucio.list_did_rules(entry.did))
            count, size = (1 if did_type == "file" else entry.length), entry.bytes
            if where:  # Rucio counts an open dataset only in its replicas
                count = count if count is not None else max(r.files for r in where)
                size = size if size is not None else max(r.bytes for r in where)
            yield Found(entry.did, entry.type, size, count, where, rules)

    def _file_replicas(self, page: list[DIDEntry]) -> dict[str, tuple[DatasetReplica, ...]]:
        """Replicas of a page of files, in one call, in the form of a dataset's."""
        by_did: dict[str, tuple[DatasetReplica, ...]] = {}
        for file in self.rucio.list_file_replicas([e.did for e in page]):
            size = file.bytes or 0
            by_did[file.did] = tuple(
                DatasetReplica(
                    rse=rse,
                    files=1,
                    available_files=int(state == "AVAILABLE"),
                    bytes=size,
                    available_bytes=size if state == "AVAILABLE" else 0,
                    state=state,
                )
                for rse, state in sorted(file.states.items())
            )
        return by_did

    def _rule(self, rule: Rule) -> RuleOnData:
        comment = rule.comment
        return RuleOnData(
            id=rule.id,
            rse_expression=rule.rse_expression,
            state=rule.state,
            account=rule.account,
            owner=self.owners.get(comment) if comment else None,
            steward=bool(comment and comment.startswith(TAG_PREFIX)),
            comment=comment,
            expires_at=rule.expires_at,
        )
