"""Rucio's DID verbs (its ``DIDClient``): scopes, collections, content, metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from rucio.common import exception as rucio_errors

from steward.exceptions import RucioPermanentError
from steward.storage.rucio.callpath import (
    DEFAULT_BATCH,
    RucioCallPath,
    caused_by,
    did_dict,
    seconds,
    split_did,
    utc,
)
from steward.storage.rucio.types import File, Rule

__all__ = ["DIDClient"]


class DIDClient(RucioCallPath):
    """Scopes, datasets, containers, their content and metadata."""

    def list_dids(
        self,
        scope: str,
        match: Mapping[str, str] | None = None,
        *,
        exclude: Sequence[Mapping[str, str]] = (),
        did_type: Literal["dataset", "container", "collection", "file", "all"] = "dataset",
    ) -> list[str]:
        """DIDs (``scope:name``) of a scope whose metadata matches, minus the excluded.

        ``match`` keys must be managed by a Rucio metadata plugin: the DID columns
        (``datatype``, ``project``, ``run_number``, ``stream_name``, ``version``...) always;
        any key with the JSON plugin, which needs PostgreSQL, Oracle or MySQL (not SQLite).
        Each exclusion costs one more listing, subtracted here, so a DID lacking an excluded
        key is kept (a ``key.ne`` filter would drop it).

        Rucio refuses one filter whose keys belong to different metadata plugins (a DID
        column such as ``datatype`` with a JSON key such as ``instrument``), so each key is
        listed on its own and the results intersected: one listing per key.
        """
        selected = self._dids(scope, dict(match or {}), did_type)
        for excluded in exclude:
            selected -= self._dids(scope, {**(match or {}), **excluded}, did_type)
        return sorted(f"{scope}:{name}" for name in selected)

    def _dids(self, scope: str, filters: dict[str, str], did_type: str) -> set[str]:
        singles: list[dict[str, str]] = [{k: v} for k, v in sorted(filters.items())] or [{}]
        result: set[str] | None = None
        for single in singles:
            names = self._list_names(scope, single, did_type)
            result = names if result is None else result & names
            if not result:
                break
        return result or set()

    def _list_names(self, scope: str, single: dict[str, str], did_type: str) -> set[str]:
        names: list[str] = self._call(
            "list_dids", lambda c: list(c.list_dids(scope, [single], did_type=did_type))
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
            batch = [did_dict(did) for did in wanted[start : start + batch_size]]
            for row in self._metadata_rows(batch, "DID_COLUMN"):
                meta = dict(row)
                meta["created_at"] = utc(meta.get("created_at"))
                found[f"{row['scope']}:{row['name']}"] = meta
            if not custom or not self.custom_metadata(batch[0]["scope"]):
                continue
            for row in self._metadata_rows(batch, "ALL"):
                meta = found.setdefault(f"{row['scope']}:{row['name']}", {})
                meta.update({k: v for k, v in row.items() if meta.get(k) is None})
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

    def _metadata_rows(self, batch: list[dict[str, str]], plugin: str) -> list[dict[str, Any]]:
        try:
            rows: list[dict[str, Any]] = self._call(
                "get_metadata_bulk",
                lambda c: list(c.get_metadata_bulk(batch, inherit=False, plugin=plugin)),
            )
        except RucioPermanentError as error:
            if caused_by(error, rucio_errors.DataIdentifierNotFound):
                return []
            raise
        return [dict(row) for row in rows]

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
