"""Rucio's request verbs (its ``RequestClient``): transfer limits, the shares of activities.

A transfer limit caps the transfers of one activity (or of all) into the RSEs of an
expression. When one applies to a request, Rucio's preparer queues the request as WAITING and
its throttler releases waiting requests as transfers finish, so the limit is the activity's
share of the link. Setting it needs ``root`` or the ``admin`` attribute (Rucio's
``perm_set_transfer_limit``), which Steward's account has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steward.storage.rucio.callpath import RucioCallPath

__all__ = ["ALL_ACTIVITIES", "RequestClient", "TransferLimit"]

ALL_ACTIVITIES = "all_activities"
"""Rucio's activity name of a limit that applies to every activity."""


@dataclass(frozen=True, slots=True)
class TransferLimit:
    """One transfer limit as Rucio keeps it (destination direction)."""

    rse_expression: str
    activity: str
    max_transfers: int

    @classmethod
    def from_rucio(cls, row: dict[str, Any]) -> TransferLimit:
        """Build from a ``list_transfer_limits`` row."""
        return cls(
            rse_expression=str(row["rse_expression"]),
            activity=str(row.get("activity") or ALL_ACTIVITIES),
            max_transfers=int(row.get("max_transfers") or 0),
        )


class RequestClient(RucioCallPath):
    """Transfer limits of activities into RSEs."""

    def get_transfer_limit(self, rse_expression: str, activity: str) -> TransferLimit | None:
        """The destination limit of ``activity`` into ``rse_expression``, if there is one.

        Rucio compares the expression as written, so pass it as it was set.
        """
        rows = self._call("list_transfer_limits", lambda c: list(c.list_transfer_limits()))
        for row in rows:
            limit = TransferLimit.from_rucio(row)
            direction = str(row.get("direction") or "D").upper().rsplit(".", 1)[-1]
            if direction in {"D", "DESTINATION"} and (limit.rse_expression, limit.activity) == (
                rse_expression,
                activity,
            ):
                return limit
        return None

    def set_transfer_limit(self, rse_expression: str, activity: str, max_transfers: int) -> None:
        """Create or change the destination limit of ``activity`` into ``rse_expression``.

        Idempotent: setting the value a limit already has changes nothing.
        """
        self._call(
            "set_transfer_limit",
            lambda c: c.set_transfer_limit(
                rse_expression=rse_expression, activity=activity, max_transfers=max_transfers
            ),
        )
