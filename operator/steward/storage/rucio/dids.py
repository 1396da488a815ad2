"""Rucio's DID verbs (its ``DIDClient``): scopes, collections, content, metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from rucio.common import exception as rucio_errors

from steward.exceptions import RucioPermanentError
from steward.storage.rucio.callpath import RucioCallPath, caused_by, did_dict, seconds, split_did
from steward.storage.rucio.types import File, Rule

__all__ = ["DID_COLUMN_KEYS", "NAMES_PER_CALL", "DIDClient", "DIDKind"]

DIDKind = Literal["dataset", "container", "collection", "file", "all"]
"""What a DID listing returns, as Rucio's ``did_type`` names it."""

DID_COLUMN_KEYS: Final = frozenset(
    {
        "campaign",
        "datatype",
        "events",
        "guid",
        "lumiblocknr",
        "panda_id",
        "phys_group",
        "prod_step",
        "project",
        "provenance",
        "run_number",
        "stream_name",
        "task_id",
        "version",
        "transient",
        "length",
        "bytes",
        "md5",
        "adler32",
        "hidden",
        "eol_at",
        "is_archive",
        "constituent",
        "access_cnt",
        "accessed_at",
        "closed_at",
        "expired_at",
        "purge_replicas",
    }
)
"""Metadata keys Rucio's ``DID_COLUMN`` plugin manages: columns of its DID table.

Rucio asks that plugin first (``rucio.core.did_meta_plugins.list_dids``), so these keys are
always its own; every other key belongs to the custom (JSON) plugin.
"""

NAMES_PER_CALL: Final = 20
"""DIDs checked by name in one listing (OR groups in the request line, which gunicorn caps at
4 KiB)."""

_COLUMNS: Final = "did_column"
_CUSTOM: Final = "custom"
_BOUND: Final = {_COLUMNS: "created_at.gte", _CUSTOM: "updated_at.gte"}
"""The time bound each plugin's table offers: the DID's creation; its JSON row's update."""


def _by_plugin(filters: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Filter keys split by the metadata plugin managing them (DID columns first)."""
    groups: dict[str, dict[str, str]] = {}
    for key, value in sorted(filters.items()):
        plugin = _COLUMNS if key.split(".")[0] in DID_COLUMN_KEYS else _CUSTOM
        groups.setdefault(plugin, {})[key] = value
    return groups or {_COLUMNS: {}}


def _as_rucio_time(moment: datetime) -> str:
    """A time as Rucio's filter engine parses it: UTC, naive, with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DIDClient(RucioCallPath):
    """Scopes, datasets, containers, their content and metadata."""

    def list_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None = None,
        *,
        exclude: Sequence[Mapping[str, str]] = (),
        did_type: DIDKind = "dataset",
    ) -> list[str]:
        """DIDs (``scope:name``) of a scope whose metadata matches, minus the excluded.

        ``match`` keys must be managed by a Rucio metadata plugin: the DID columns
        (`DID_COLUMN_KEYS`) always; any other key with the JSON plugin, which needs
        PostgreSQL, Oracle or MySQL (not SQLite). Rucio refuses one filter whose keys belong to
        different plugins, so the keys of each plugin go in one filter and the (at most two)
        listings are intersected. Each exclusion costs one listing per plugin of its keys,
        subtracted here, so a DID lacking an excluded key is kept (a ``key.ne`` filter would
        drop it).
        """
        selected = self._dids(scope, dict(match or {}), did_type)
        for excluded in exclude:
            if selected:
                selected -= self._dids(scope, {**(match or {}), **excluded}, did_type)
        return sorted(f"{scope}:{name}" for name in selected)

    def list_new_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None,
        *,
        since: datetime,
        exclude: Sequence[Mapping[str, str]] = (),
        did_type: DIDKind = "dataset",
    ) -> list[str]:
        """Matching DIDs created, or whose JSON metadata changed, at or after ``since``.

        The incremental form of `list_dids`: one bounded listing per metadata plugin, so
        its cost follows the data that arrived, not the size of the scope. Rucio bounds a
        DID-column filter by the DID's ``created_at``; the JSON plugin's own table (one row
        per DID, written when its JSON metadata is set, with the DID or later) by its
        ``updated_at``, which also moves when that metadata changes. A DID whose DID-column
        metadata changes later is not seen here: Rucio offers no bound on that (the DID
        column ``updated_at`` is not filterable), so only a full listing finds it.

        With keys of both plugins, a DID in both bounded listings matches; one in the JSON
        listing only (an older DID whose JSON metadata changed) is checked against the
        DID-column keys by name. Exclusions are checked for the DIDs found only, by name,
        never by listing the scope.
        """
        bound = _as_rucio_time(since)
        groups = _by_plugin(dict(match or {}))
        found: dict[str, set[str]] = {
            plugin: self._list_names(scope, {**keys, _BOUND[plugin]: bound}, did_type)
            for plugin, keys in groups.items()
        }
        if len(found) == 1:
            (selected,) = found.values()
        else:
            columns, custom = found[_COLUMNS], found[_CUSTOM]
            changed = custom - columns
            selected = (columns & custom) | self._named(scope, groups[_COLUMNS], changed, did_type)
        for excluded in exclude:
            if not selected:
                break
            hit: set[str] | None = None
            for keys in _by_plugin(dict(excluded)).values():
                names = self._named(scope, keys, selected if hit is None else hit, did_type)
                hit = names if hit is None else hit & names
            selected -= hit or set()
        return sorted(f"{scope}:{name}" for name in selected)

    def _dids(self, scope: str, filters: dict[str, str], did_type: str) -> set[str]:
        result: set[str] | None = None
        for keys in _by_plugin(filters).values():
            names = self._list_names(scope, keys, did_type)
            result = names if result is None else result & names
            if not result:
                break
        return result or set()

    def _named(
        self, scope: str, keys: Mapping[str, str], names: set[str], did_type: str
    ) -> set[str]:
        """Which of ``names`` match ``keys``: one listing per `NAMES_PER_CALL` names."""
        ordered = sorted(names)
        result: set[str] = set()
        for start in range(0, len(ordered), NAMES_PER_CALL):
            batch = ordered[start : start + NAMES_PER_CALL]
            result |= self._list_groups(scope, [{**keys, "name": name} for name in batch], did_type)
        return result & names

    def _list_names(self, scope: str, single: dict[str, str], did_type: str) -> set[str]:
        return self._list_groups(scope, [single], did_type)

    def _list_groups(self, scope: str, groups: list[dict[str, str]], did_type: str) -> set[str]:
        """Names of DIDs matching any of ``groups`` (Rucio ORs the filters of one listing)."""
        names: list[str] = self._call(
            "list_dids", lambda c: list(c.list_dids(scope, groups, did_type=did_type))
        )
        return set(names)

    def add_scope(self, scope: str, account: str | None = None) -> bool:
        """Create a scope (owned by ``account``, ours by default); False if it existed."""
        try:
            self._call("add_scope", lambda c: c.add_scope(account or self.account, scope))
        except RucioPermanentError as error:
            if not caused_by(error, rucio_errors.Duplicate):
                raise
            return False
        return True

    def add_dataset(
        self,
        did: str,
        *,
        meta: Mapping[str, Any] | None = None,
        lifetime: timedelta | None = None,
    ) -> bool:
        """Create a dataset; False if it existed. See `allow_metadata_values` for datatype."""
        return self._add_collection(did, "DATASET", meta, lifetime)

    def add_container(self, did: str, *, meta: Mapping[str, Any] | None = None) -> bool:
        """Create a container; False if it existed."""
        return self._add_collection(did, "CONTAINER", meta, None)

    def _add_collection(
        self,
        did: str,
        did_type: Literal["DATASET", "CONTAINER"],
        meta: Mapping[str, Any] | None,
        lifetime: timedelta | None,
    ) -> bool:
        scope, name = split_did(did)
        try:
            self._call(
                "add_did",
                lambda c: c.add_did(
                    scope, name, did_type, meta=dict(meta or {}), lifetime=seconds(lifetime)
                ),
            )
        except RucioPermanentError as error:
            if not caused_by(error, rucio_errors.DataIdentifierAlreadyExists):
                raise
            return False
        return True

    def attach(self, parent: str, children: Sequence[str]) -> None:
        """Attach DIDs (files to a dataset, datasets to a container)."""
        scope, name = split_did(parent)
        dids = [did_dict(child) for child in children]
        self._call("attach_dids", lambda c: c.attach_dids(scope, name, dids))

    def list_content(self, did: str) -> list[str]:
        """DIDs attached to a dataset or container (``scope:name``), one listing."""
        scope, name = split_did(did)
        rows = self._call("list_content", lambda c: list(c.list_content(scope, name)))
        return sorted(f"{row['scope']}:{row['name']}" for row in rows)

    def is_open(self, did: str) -> bool:
        """Whether a dataset or container is still open (files may be added)."""
        scope, name = split_did(did)
        row = self._call("get_did", lambda c: c.get_did(scope, name))
        return bool(row.get("open"))

    def close_collection(self, did: str) -> bool:
        """Close a dataset or container; False if it was closed already."""
        if not self.is_open(did):
            return False
        scope, name = split_did(did)
        self._call("set_status", lambda c: c.set_status(scope, name, open=False))
        return True

    def set_metadata(self, did: str, meta: Mapping[str, Any]) -> None:
        """Set metadata keys of a DID (see `list_dids` for which keys a database supports)."""
        scope, name = split_did(did)
        self._call("set_metadata_bulk", lambda c: c.set_metadata_bulk(scope, name, dict(meta)))

    def allow_metadata_values(self, key: str, values: Iterable[str]) -> None:
        """Declare allowed values of a metadata key (Rucio checks a dataset's ``datatype``)."""
        try:
            self._call("add_key", lambda c: c.add_key(key, "ALL"))
        except RucioPermanentError as error:
            if not caused_by(error, rucio_errors.Duplicate):
                raise
        known = set(self._call("list_values", lambda c: c.list_values(key)) or [])
        for value in sorted(set(values) - known):
            self._rpc("add_value", key, value)

    def list_files(self, did: str) -> list[File]:
        """The files of a DID (itself, for a file), with their sizes."""
        scope, name = split_did(did)
        rows = self._call("list_files", lambda c: list(c.list_files(scope, name)))
        return [File(f"{row['scope']}:{row['name']}", int(row.get("bytes") or 0)) for row in rows]

    def list_file_rules(self, did: str) -> list[Rule]:
        """Every rule, of any account, holding a lock on one file (on any RSE)."""
        scope, name = split_did(did)
        rows = self._call(
            "list_associated_rules_for_file",
            lambda c: list(c.list_associated_rules_for_file(scope, name)),
        )
        return [Rule.from_rucio(row) for row in rows]
