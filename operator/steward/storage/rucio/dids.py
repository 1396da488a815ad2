"""Rucio's DID verbs (its ``DIDClient``): scopes, collections, content, metadata."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from rucio.common import exception as rucio_errors

from steward.exceptions import RucioNotFoundError, RucioPermanentError
from steward.models.common import name_wildcard_regex
from steward.storage.rucio.callpath import (
    DEFAULT_BATCH,
    RucioCallPath,
    caused_by,
    did_dict,
    seconds,
    split_did,
    utc,
)
from steward.storage.rucio.types import DIDEntry, File, Rule

__all__ = [
    "DID_COLUMN_KEYS",
    "NAMES_PER_CALL",
    "PLUGINS",
    "Collection",
    "DIDClient",
    "DIDKind",
    "arrival_plugins",
    "batched",
    "metadata_text",
]

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
PLUGINS: Final = (_COLUMNS, _CUSTOM)
"""Rucio's two metadata plugins as `DIDClient.list_arrived` and `arrival_plugins` name
them: the DID columns (their time bound is the DID's creation) and the JSON plugin (the
update of the DID's JSON row)."""
_BOUND: Final = {_COLUMNS: "created_at.gte", _CUSTOM: "updated_at.gte"}
"""The time bound each plugin's table offers: the DID's creation; its JSON row's update."""


_CREATION_KEYS: Final = frozenset({"created_at", "created_after", "created_before"})
"""Time bounds on the DID's creation: Rucio's filter engine turns ``created_after`` and
``created_before`` into ``created_at`` bounds, a DID column (the OODS window lists by them)."""

_COLUMN_FILTERS: Final = DID_COLUMN_KEYS | _CREATION_KEYS
"""Filter keys the DID-column plugin answers (built once, not per key of every listing)."""


def _by_plugin(filters: Mapping[str, str], name: str | None = None) -> dict[str, dict[str, str]]:
    """Filter keys split by the metadata plugin managing them (DID columns first).

    A ``name`` pattern goes into every group: Rucio passes ``name`` through to whichever
    plugin answers (``rucio.core.did_meta_plugins.list_dids``), and each applies it to its
    own table's name column.
    """
    groups: dict[str, dict[str, str]] = {}
    for key, value in sorted(filters.items()):
        plugin = _COLUMNS if key.split(".")[0] in _COLUMN_FILTERS else _CUSTOM
        groups.setdefault(plugin, {})[key] = value
    groups = groups or {_COLUMNS: {}}
    if name is not None:
        for keys in groups.values():
            keys["name"] = name
    return groups


def _like(names: set[str], name: str | None) -> set[str]:
    """Those of ``names`` a ``name`` pattern matches, case-sensitively.

    Rucio turns ``*`` into SQL ``LIKE``, which PostgreSQL applies case-sensitively but SQLite
    does not (for ASCII): checking Rucio's answer here gives one selection on every database,
    the one a subscription's ``pattern`` makes. A pattern without ``*`` is an equality Rucio
    applied exactly.
    """
    if name is None or "*" not in name:
        return names
    pattern = re.compile(name_wildcard_regex(name))
    return {found for found in names if pattern.match(found)}


def arrival_plugins(match: Mapping[str, str] | None) -> frozenset[str]:
    """The metadata plugins (`PLUGINS`) whose arrivals an incremental ``match`` needs."""
    return frozenset(_by_plugin(dict(match or {})))


def _named_like(names: Iterable[str], name: str | None) -> set[str]:
    """Those of ``names`` a ``name`` pattern (or exact name) selects, checked here.

    `_like` trusts Rucio with a pattern without ``*`` (an equality it applied); names that
    came from a listing without the pattern must be checked for it here too.
    """
    if name is None:
        return set(names)
    if "*" not in name:
        return {found for found in names if found == name}
    return _like(set(names), name)


def _as_rucio_time(moment: datetime) -> str:
    """A time as Rucio's filter engine parses it: UTC, naive, with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MANAGED: Final = "no metadata plugin that manages"
"""Rucio's words for a filter key no metadata plugin manages (``InvalidMetadata``)."""

ListedType = DIDKind


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily."""
    page: list[Any] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def metadata_text(value: Any) -> str:  # noqa: ANN401 - metadata values are loosely typed
    """Compare metadata as Rucio's filters do: as text, booleans in lower case."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True, slots=True)
class Collection:
    """A dataset or container as Rucio reports it."""

    did: str
    type: str
    """``DATASET`` or ``CONTAINER``."""
    open: bool
    """Whether files may still be attached."""


def _unmanaged(error: RucioPermanentError) -> bool:
    """Whether Rucio refused a filter because no metadata plugin manages one of its keys."""
    return caused_by(error, rucio_errors.InvalidMetadata) and _MANAGED in str(error)


class DIDClient(RucioCallPath):
    """Scopes, datasets, containers, their content and metadata."""

    def list_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        exclude: Sequence[Mapping[str, str]] = (),
        did_type: DIDKind = "dataset",
    ) -> list[str]:
        """DIDs (``scope:name``) of a scope whose metadata matches, minus the excluded.

        ``name`` is a DID name pattern (``*`` for any characters, as ``rucio list-dids
        scope:name*``): Rucio filters by it in each listing (``LIKE`` on the name column),
        so only matching DIDs come back.

        ``match`` keys must be managed by a Rucio metadata plugin: the DID columns
        (`DID_COLUMN_KEYS`) always; any other key with the JSON plugin, which needs
        PostgreSQL, Oracle or MySQL (not SQLite). Rucio refuses one filter whose keys belong to
        different plugins, so the keys of each plugin go in one filter and the (at most two)
        listings are intersected. Each exclusion costs one listing per plugin of its keys,
        subtracted here, so a DID lacking an excluded key is kept (a ``key.ne`` filter would
        drop it).
        """
        selected = self._dids(scope, dict(match or {}), did_type, name)
        for excluded in exclude:
            if not selected:
                break
            try:
                selected -= self._dids(scope, {**(match or {}), **excluded}, did_type, name)
            except RucioPermanentError as error:
                if not _unmanaged(error):
                    raise
                # No plugin manages the key (a custom key on SQLite), so no DID carries it
                # and the exclusion removes nothing (e.g. ``private`` on every DAC export).
        return sorted(f"{scope}:{found}" for found in selected)

    def list_new_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None,
        *,
        since: datetime,
        name: str | None = None,
        exclude: Sequence[Mapping[str, str]] = (),
        did_type: DIDKind = "dataset",
        arrived: Mapping[str, AbstractSet[str]] | None = None,
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
        never by listing the scope. A ``name`` pattern (as in `list_dids`) narrows every
        bounded listing.

        ``arrived`` is what a shared listing of the scope (`list_arrived`, taken at or before
        ``since``) returned per plugin, less the names the caller already selects. When it
        covers every plugin of the filter and holds at most `NAMES_PER_CALL` names, those
        names are checked against the keys by name (one call per plugin, none when nothing
        arrived) and the scope is not listed; otherwise the bounded listings above run, as
        they cost no more calls than the names would.
        """
        groups = _by_plugin(dict(match or {}), name)
        checked = self._arrived_named(scope, groups, name, did_type, arrived)
        if checked is not None:
            return self._without(scope, checked, exclude, did_type)
        bound = _as_rucio_time(since)
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
        return self._without(scope, _like(selected, name), exclude, did_type)

    def _without(
        self,
        scope: str,
        selected: set[str],
        exclude: Sequence[Mapping[str, str]],
        did_type: str,
    ) -> list[str]:
        """``selected`` minus the exclusions, each checked by name (never a scope listing)."""
        for excluded in exclude:
            if not selected:
                break
            hit: set[str] | None = None
            try:
                for keys in _by_plugin(dict(excluded)).values():
                    names = self._named(scope, keys, selected if hit is None else hit, did_type)
                    hit = names if hit is None else hit & names
            except RucioPermanentError as error:
                if not _unmanaged(error):
                    raise
                hit = None  # a key no plugin manages: no DID carries it, nothing is excluded
            selected -= hit or set()
        return sorted(f"{scope}:{found}" for found in selected)

    def list_arrived(
        self, scope: str, plugin: str, *, since: datetime, did_type: DIDKind = "dataset"
    ) -> set[str] | None:
        """Names of a scope's DIDs that arrived for ``plugin`` at or after ``since``.

        For the DID columns, the DIDs of ``did_type`` created since then; for the JSON
        plugin, the DIDs whose JSON metadata was written since then (Rucio's JSON listing
        ignores the DID type). One listing with only the time bound: what every policy of
        the scope would otherwise ask with its own keys (`list_new_dids`). None when this
        Rucio has no such plugin (the JSON plugin on SQLite).
        """
        try:
            return self._list_names(scope, {_BOUND[plugin]: _as_rucio_time(since)}, did_type)
        except RucioPermanentError as error:
            if not _unmanaged(error):
                raise
            return None

    def _arrived_named(
        self,
        scope: str,
        groups: Mapping[str, Mapping[str, str]],
        name: str | None,
        did_type: str,
        arrived: Mapping[str, AbstractSet[str]] | None,
    ) -> set[str] | None:
        """The arrived names matching every group's keys, checked by name; None: list instead.

        A DID matches when it matches the keys of both plugins; it is new when it arrived for
        either (created, or its JSON metadata written), as the bounded listings find it.
        """
        if arrived is None or any(plugin not in arrived for plugin in groups):
            return None
        candidates = _named_like(set().union(*(arrived[p] for p in groups)), name)
        if len(candidates) > NAMES_PER_CALL:
            return None
        for keys in groups.values():
            wanted = {key: value for key, value in keys.items() if key != "name"}
            if candidates and wanted:
                candidates = self._named(scope, wanted, candidates, did_type)
        return candidates

    def _dids(
        self, scope: str, filters: dict[str, str], did_type: str, name: str | None
    ) -> set[str]:
        result: set[str] | None = None
        for keys in _by_plugin(filters, name).values():
            names = self._list_names(scope, keys, did_type)
            result = names if result is None else result & names
            if not result:
                break
        return _like(result or set(), name)

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

    def attach(
        self, parent: str, children: Sequence[str], *, ignore_duplicate: bool = False
    ) -> None:
        """Attach DIDs (files to a dataset, datasets to a container).

        With ``ignore_duplicate``, children attached already are skipped instead of failing
        the call, so a repeated attach (after a crash) is harmless.
        """
        scope, name = split_did(parent)
        dids = [did_dict(child) for child in children]
        if ignore_duplicate:
            attachment = {"scope": scope, "name": name, "dids": dids}
            self._call(
                "attach_dids_to_dids",
                lambda c: c.attach_dids_to_dids([attachment], ignore_duplicate=True),
            )
            return
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

    def dids_metadata(
        self, dids: Iterable[str], *, custom: bool = False, batch_size: int = DEFAULT_BATCH
    ) -> dict[str, dict[str, Any]]:
        """Metadata of many DIDs, `DEFAULT_BATCH` a call: ``{did: {key: value}}``.

        Always the DID columns (``created_at`` as an aware datetime, ``bytes``, ``length``,
        ``datatype``...); with ``custom`` also the keys of Rucio's JSON plugin, unless this
        Rucio refuses them (SQLite), when the DID columns alone are returned. DIDs Rucio does
        not know are absent.
        """
        wanted = list(dict.fromkeys(dids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), batch_size):
            batch = wanted[start : start + batch_size]
            for did, meta in self.get_metadata_bulk(batch, plugin="DID_COLUMN").items():
                meta["created_at"] = utc(meta.get("created_at"))
                found[did] = meta
            if not custom or not self.custom_metadata(split_did(batch[0])[0]):
                continue
            for did, extra in self.get_metadata_bulk(batch, plugin="ALL").items():
                meta = found.setdefault(did, {})
                meta.update({k: v for k, v in extra.items() if meta.get(k) is None})
        return found

    def custom_metadata(self, scope: str) -> bool:
        """Whether this Rucio keeps custom DID metadata (its JSON plugin; not on SQLite).

        Asked once per storage instance, by listing an existing scope with a custom key: a
        Rucio without the plugin refuses the filter (InvalidMetadata), and asking it for the
        metadata itself would fail with a server error instead.
        """
        known: bool | None = getattr(self, "_custom_metadata", None)
        if known is None:
            try:
                self._list_names(scope, {"steward_probe": "none"}, "all")
            except RucioPermanentError as error:
                if "InvalidMetadata" not in str(error):
                    raise
                known = False
            else:
                known = True
            self._custom_metadata = known
        return known

    def resolved_bytes(self, dids: Iterable[str]) -> dict[str, int]:
        """Bytes of DIDs whose size Rucio has not recorded, summed over their files.

        Rucio records a dataset's bytes when it is closed; an open one lists none. This asks
        Rucio to add up the files (one call per DID): a size the deletion gate compares with
        its limits must never be taken as zero. DIDs Rucio does not know are absent.
        """
        sizes: dict[str, int] = {}
        for did in dict.fromkeys(dids):
            scope, name = split_did(did)
            try:
                row = self._rpc("get_did", scope, name, dynamic_depth="FILE")
            except RucioPermanentError as error:
                if caused_by(error, rucio_errors.DataIdentifierNotFound):
                    continue
                raise
            sizes[did] = int(row.get("bytes") or 0)
        return sizes

    def iter_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None = None,
        *,
        did_type: ListedType = "dataset",
        page_size: int = DEFAULT_BATCH,
    ) -> Iterator[DIDEntry]:
        """Stream the DIDs of a scope whose metadata matches, with their sizes; lazily.

        Unlike `list_dids`, nothing is collected: Rucio streams its answer and the rows are
        read as the caller consumes them, so a scope of a million datasets costs the memory
        of one page. Keys of Rucio's two metadata plugins cannot share one filter, so when
        both kinds are given Rucio searches by the JSON keys (usually the selective ones, such
        as ``visit``) and the DID-column keys (`DID_COLUMN_KEYS`, such as ``datatype``) are
        checked here, one ``get_metadata_bulk`` call per page of ``page_size`` DIDs.

        Raises
        ------
        RucioPermanentError
            Rucio refuses the filter (a JSON key on SQLite, which has no JSON plugin).
        """
        wanted = dict(match or {})
        columns = {k: v for k, v in wanted.items() if k in DID_COLUMN_KEYS}
        others = {k: v for k, v in wanted.items() if k not in DID_COLUMN_KEYS}
        searched, checked = (others, columns) if others else (columns, {})
        rows = self._stream(
            "list_dids",
            lambda c: c.list_dids(scope, [searched], did_type=did_type, long=True),
        )
        entries = (DIDEntry.from_rucio(row) for row in rows)
        if not checked:
            yield from entries
            return
        for page in batched(entries, page_size):
            meta = self.get_metadata_bulk([entry.did for entry in page], plugin="DID_COLUMN")
            yield from (
                entry
                for entry in page
                if all(
                    key in meta.get(entry.did, {}) and metadata_text(meta[entry.did][key]) == value
                    for key, value in checked.items()
                )
            )

    def get_metadata_bulk(
        self, dids: Sequence[str], *, plugin: Literal["ALL", "DID_COLUMN", "JSON"] = "DID_COLUMN"
    ) -> dict[str, dict[str, Any]]:
        """Metadata of many DIDs in one call, by ``scope:name``; unknown DIDs are absent.

        Ask ``JSON`` or ``ALL`` only where the JSON plugin exists (see `get_metadata`). The
        one place the bulk call is made: a batch of DIDs none of which Rucio knows comes back
        as Rucio's DataIdentifierNotFound, which here is an empty answer like any other
        absence.
        """
        batch = [did_dict(did) for did in dids]
        try:
            rows = self._call(
                "get_metadata_bulk",
                lambda c: list(c.get_metadata_bulk(batch, inherit=False, plugin=plugin)),
            )
        except RucioPermanentError as error:
            if caused_by(error, rucio_errors.DataIdentifierNotFound):
                return {}
            raise
        return {
            f"{row['scope']}:{row['name']}": {
                key: value for key, value in row.items() if key not in {"scope", "name"}
            }
            for row in rows
        }

    def get_metadata(
        self, did: str, *, plugin: Literal["ALL", "DID_COLUMN", "JSON"] = "DID_COLUMN"
    ) -> dict[str, Any]:
        """Metadata of one DID from one plugin (``ALL``: both).

        Ask ``JSON`` or ``ALL`` only where the JSON plugin exists: on SQLite Rucio answers
        them with HTTP 500.

        Raises
        ------
        RucioNotFoundError
            If there is no such DID.
        """
        scope, name = split_did(did)
        meta: dict[str, Any] = self._call(
            "get_metadata", lambda c: c.get_metadata(scope, name, plugin=plugin)
        )
        return meta

    def get_collection(self, did: str) -> Collection | None:
        """A dataset or container, or None if the DID does not exist.

        Raises
        ------
        RucioPermanentError
            If the DID is a file.
        """
        scope, name = split_did(did)
        try:
            row = self._call("get_did", lambda c: c.get_did(scope, name))
        except RucioNotFoundError:
            return None
        kind = str(row.get("type") or "")
        if kind not in {"DATASET", "CONTAINER"}:
            msg = f"{did} is a {kind or 'DID of unknown type'}, not a dataset or container"
            raise RucioPermanentError(msg)
        return Collection(did, kind, bool(row.get("open")))

    def list_scopes(self) -> list[str]:
        """Every scope in Rucio."""
        return sorted(self._call("list_scopes", lambda c: list(c.list_scopes())))

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
