"""Rucio's replica verbs (its ``ReplicaClient``), and reading a replica's bytes back."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rucio.common import exception as rucio_errors

from steward.exceptions import (
    ConfigurationError,
    RucioNotFoundError,
    RucioPermanentError,
    RucioTransientError,
)
from steward.storage.checksums import Checksums, file_checksums
from steward.storage.rucio.callpath import DEFAULT_BATCH, RucioCallPath, did_dict, split_did
from steward.storage.rucio.types import DatasetReplica, File, FileReplica

__all__ = ["MOCK_PROTOCOL", "ReplicaClient"]

MOCK_PROTOCOL = "rucio.rse.protocols.mock.Default"
"""Rucio's mock protocol: it stores nothing, so no replica on such an RSE can be read."""


class ReplicaClient(RucioCallPath):
    """File replicas: register, list, mark available or not, read back."""

    def add_replicas(
        self, rse: str, files: Sequence[File], *, ignore_availability: bool = True
    ) -> None:
        """Register files and their replicas on ``rse``, `DEFAULT_BATCH` files a call.

        Each call is one transaction in Rucio: a batch of files is registered entirely or not
        at all, with its metadata. Rucio looks the files up with one OR term each, and SQLite
        refuses an expression deeper than 1,000 terms. A file Rucio already knows keeps the
        size and checksums it has (Rucio does not compare them: the caller must). With
        ``ignore_availability=False`` an RSE not available for writing (a downtime) is refused.
        """
        rows = [_replica_row(f) for f in files]
        for start in range(0, len(rows), DEFAULT_BATCH):
            self._rpc(
                "add_replicas",
                rse,
                rows[start : start + DEFAULT_BATCH],
                ignore_availability=ignore_availability,
            )

    def list_replicas(self, dids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Replica states per file: ``{file DID: {RSE: state}}`` for files and collections.

        States are Rucio's names (``AVAILABLE``, ``COPYING``, ``UNAVAILABLE``...), in every
        state, whatever the RSE's availability.
        """
        rows = self._call(
            "list_replicas",
            lambda c: list(c.list_replicas([did_dict(d) for d in dids], all_states=True)),
        )
        return {f"{row['scope']}:{row['name']}": dict(row.get("states") or {}) for row in rows}

    def list_file_replicas(
        self, dids: Sequence[str], *, rse_expression: str | None = None
    ) -> list[FileReplica]:
        """The files of ``dids`` (files or collections) with size, checksums and replicas.

        Files without any replica (or unknown DIDs) are absent. ``rse_expression`` keeps only
        replicas on the RSEs it selects. One call per `DEFAULT_BATCH` DIDs.
        """
        found: list[FileReplica] = []
        for start in range(0, len(dids), DEFAULT_BATCH):
            batch = [did_dict(d) for d in dids[start : start + DEFAULT_BATCH]]
            found.extend(
                FileReplica.from_rucio(row) for row in self._replicas(batch, rse_expression)
            )
        return found

    def _replicas(
        self, batch: list[dict[str, str]], rse_expression: str | None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call(
            "list_replicas",
            lambda c: list(c.list_replicas(batch, all_states=True, rse_expression=rse_expression)),
        )
        return rows

    def list_dataset_replicas(self, did: str) -> list[DatasetReplica]:
        """Where a dataset's files are, one row per RSE, counted from its file replicas.

        Rucio's dataset replica table is kept only for data placed by rules; ``deep`` counts
        the file replicas, so files registered without a rule (an ingest) are counted too.
        """
        scope, name = split_did(did)
        rows = self._call(
            "list_dataset_replicas",
            lambda c: list(c.list_dataset_replicas(scope, name, deep=True)),
        )
        return sorted((DatasetReplica.from_rucio(row) for row in rows), key=lambda r: r.rse)

    def set_replicas_available(self, rse: str, dids: Sequence[str], *, available: bool) -> None:
        """Mark file replicas available or unavailable (a lost disk, a broken tape)."""
        state = "A" if available else "U"
        rows = [{**did_dict(did), "state": state} for did in dids]
        self._call("update_replicas_states", lambda c: c.update_replicas_states(rse, rows))

    def read_replica(self, rse: str, pfn: str) -> Checksums:
        """Read one replica's bytes through the RSE's protocol and checksum them.

        The bytes go to a private temporary file, removed afterwards: verifying a restore
        means reading it back, not trusting what the storage says about it.

        Raises
        ------
        RucioNotFoundError
            Nothing was read: the file is not there, or the RSE's protocol is Rucio's mock,
            which stores no bytes (the message says which).
        RucioTransientError
            The storage did not answer.
        RucioPermanentError
            The RSE has no protocol for the PFN's scheme.
        ConfigurationError
            No rucio.cfg: Rucio's protocol implementations need one (``RUCIO_CONFIG``).
        """
        settings = self._call("get_rse", lambda c: c.get_rse(rse))
        scheme = pfn.split(":", 1)[0]
        if _impl(settings, scheme) == MOCK_PROTOCOL:
            msg = f"{rse} uses Rucio's mock protocol, which stores no bytes: {pfn} has none"
            raise RucioNotFoundError(msg)
        rsemanager = _rsemanager()
        try:
            protocol = rsemanager.create_protocol(settings, "read", scheme=scheme)
        except rucio_errors.ConfigNotFound as error:
            msg = (
                "reading replicas uses Rucio's protocol implementations, which read a "
                "rucio.cfg: set RUCIO_CONFIG (its [common] and [policy] sections suffice)"
            )
            raise ConfigurationError(msg) from error
        except Exception as error:
            msg = f"cannot read {pfn} from {rse}: no usable {scheme!r} protocol ({error})"
            raise RucioPermanentError(msg) from error
        with tempfile.TemporaryDirectory(prefix="steward-read-") as directory:
            target = Path(directory) / "replica"
            try:
                protocol.connect()
                protocol.get(pfn, str(target))
            except (rucio_errors.SourceNotFound, FileNotFoundError) as error:
                msg = f"cannot read {pfn} from {rse}: {type(error).__name__}: {error}"
                raise RucioNotFoundError(msg) from error
            except Exception as error:
                msg = f"cannot read {pfn} from {rse}: {type(error).__name__}: {error}"
                raise RucioTransientError(msg) from error
            finally:
                protocol.close()
            if not target.exists():
                msg = f"reading {pfn} from {rse} produced no file"
                raise RucioNotFoundError(msg)
            return file_checksums(target)


def _rsemanager() -> Any:  # noqa: ANN401 - rucio has no type information
    """Import Rucio's protocol layer as a client.

    Importing ``rucio.rse`` decides once whether this process is Rucio's client or its server,
    from the rucio.cfg it finds; a server's (the dev stack shares one) would make it import
    the server's modules, which the client package lacks. Steward is a client, so the import
    runs with ``RUCIO_CLIENT_MODE`` set, restored at once: child processes (a Rucio server the
    tests start) must not inherit it.
    """
    previous = os.environ.get(_CLIENT_MODE)
    os.environ[_CLIENT_MODE] = "1"
    try:
        from rucio.rse import rsemanager  # noqa: PLC0415 - see above
    finally:
        if previous is None:
            del os.environ[_CLIENT_MODE]
        else:
            os.environ[_CLIENT_MODE] = previous
    return rsemanager


_CLIENT_MODE = "RUCIO_CLIENT_MODE"


def _replica_row(file: File) -> dict[str, Any]:
    row: dict[str, Any] = {
        **did_dict(file.did),
        "bytes": file.bytes,
        "adler32": file.adler32,
        "meta": dict(file.meta),
    }
    if file.md5 is not None:
        row["md5"] = file.md5
    return row


def _impl(settings: dict[str, Any], scheme: str) -> str | None:
    """The protocol implementation an RSE declares for ``scheme``."""
    for protocol in settings.get("protocols") or []:
        if protocol.get("scheme") == scheme:
            return str(protocol.get("impl"))
    return None
