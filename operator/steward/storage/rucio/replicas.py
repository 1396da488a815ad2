"""Rucio's replica verbs (its ``ReplicaClient``)."""

from __future__ import annotations

from collections.abc import Sequence

from steward.storage.rucio.callpath import DEFAULT_BATCH, RucioCallPath, did_dict
from steward.storage.rucio.types import File

__all__ = ["ReplicaClient"]


class ReplicaClient(RucioCallPath):
    """File replicas: register, list, mark available or not."""

    def add_replicas(self, rse: str, files: Sequence[File]) -> None:
        """Register files and their replicas on ``rse``, `DEFAULT_BATCH` files a call.

        Rucio looks the files up with one OR term each, and SQLite refuses an expression
        deeper than 1,000 terms.
        """
        rows = [
            {**did_dict(f.did), "bytes": f.bytes, "adler32": f.adler32, "meta": dict(f.meta)}
            for f in files
        ]
        for start in range(0, len(rows), DEFAULT_BATCH):
            self._rpc("add_replicas", rse, rows[start : start + DEFAULT_BATCH])

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

    def set_replicas_available(self, rse: str, dids: Sequence[str], *, available: bool) -> None:
        """Mark file replicas available or unavailable (a lost disk, a broken tape)."""
        state = "A" if available else "U"
        rows = [{**did_dict(did), "state": state} for did in dids]
        self._call("update_replicas_states", lambda c: c.update_replicas_states(rse, rows))
