"""Site reconciliation: register the RSEs in Rucio, apply downtimes, report availability.

A scheduled downtime turns the affected availability flags off for its window and the next
reconcile after it restores them (LDM-230 5.1 describes planned outages of Data Backbone
endpoints). The timer that drives reconciles is level-based, so a missed edge (operator down at
the start of a window) is corrected at the next tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from steward.exceptions import PermanentError, TransientError
from steward.models.site import Site
from steward.observability import EXTERNAL_ACTIONS
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.conditions import DEGRADED, PROGRESSING, READY, condition, set_condition
from steward.storage.rucio import Availability, RucioStorage

__all__ = ["Outcome", "SiteService", "availability_at", "next_downtime_edge"]


@dataclass
class Outcome:
    """What a reconcile decided: the status to write and the Events to post."""

    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message): type is Normal or Warning."""
    requeue_after: float | None = None
    """Reconcile again after this many seconds (a downtime edge), if sooner than the timer."""
    annotations: dict[str, str | None] = field(default_factory=dict)
    """Annotations to set on the resource (None removes one: an approval used up)."""


def availability_at(site: Site, now: datetime) -> dict[str, Availability]:
    """Flags each RSE should have at ``now``: declared ones, less what a downtime turns off."""
    flags: dict[str, Availability] = {}
    for rse in site.spec.rses:
        read, write, delete = rse.availability_read, rse.availability_write, rse.availability_delete
        for downtime in site.spec.downtimes:
            if downtime.active(now) and (not downtime.rses or rse.name in downtime.rses):
                read = read and "read" not in downtime.operations
                write = write and "write" not in downtime.operations
                delete = delete and "delete" not in downtime.operations
        flags[rse.name] = Availability(read, write, delete)
    return flags


def next_downtime_edge(site: Site, now: datetime) -> datetime | None:
    """The next start or end of a downtime after ``now``, when flags must change."""
    edges = [
        moment
        for downtime in site.spec.downtimes
        for moment in (downtime.start, downtime.end)
        if moment > now
    ]
    return min(edges, default=None)


@dataclass
class SiteService:
    """Reconciles Site resources against Rucio."""

    rucio: RucioStorage
    audit: AuditService
    actor: str = "steward-operator"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def reconcile(
        self,
        site: Site,
        ref: ResourceRef,
        peers: Iterable[Site] = (),
        old_conditions: list[dict[str, Any]] | None = None,
    ) -> Outcome:
        """Make Rucio match the Site; return its status.

        Raises
        ------
        TransientError
            Rucio is unreachable; the handler retries with backoff after writing Degraded.
        """
        now = self.clock()
        wanted = availability_at(site, now)
        try:
            registration = self.rucio.register_site(site, peers=peers, availability=wanted)
        except PermanentError as exc:
            self._record(ref, "rucio.rse.register", "failure", str(exc))
            raise
        events = []
        if registration.changes:
            self._record(ref, "rucio.rse.register", "success", "; ".join(registration.changes))
            EXTERNAL_ACTIONS.labels("Site", "rucio.rse.register").inc(len(registration.changes))
            summary = "; ".join(registration.changes[:5])
            more = len(registration.changes) - 5
            events.append(
                ("Normal", "Registered", summary + (f" (+{more} more)" if more > 0 else ""))
            )
        observed = self.rucio.rse_availability([r.name for r in site.spec.rses])
        in_downtime = {name for name, flags in wanted.items() if flags != _declared(site, name)}
        rses = [
            {
                "name": name,
                "registered": flags is not None,
                "availabilityRead": flags.read if flags else None,
                "availabilityWrite": flags.write if flags else None,
                "availabilityDelete": flags.delete if flags else None,
                "inDowntime": name in in_downtime,
            }
            for name, flags in observed.items()
        ]
        registered = sum(1 for r in rses if r["registered"])
        available = sum(
            1
            for r in rses
            if r["availabilityRead"] and r["availabilityWrite"] and r["availabilityDelete"]
        )
        ready = registered == len(site.spec.rses) and not registration.pending
        generation = ref.generation
        conditions = set_condition(
            old_conditions,
            condition(
                READY,
                status=ready,
                reason="Registered" if ready else "DistancesPending",
                message=(
                    f"{registered} RSEs registered, {available} fully available"
                    if ready
                    else "waiting for peers: " + "; ".join(registration.pending)
                ),
                generation=generation,
                now=now,
            ),
        )
        conditions = set_condition(
            conditions,
            condition(
                DEGRADED,
                status=bool(in_downtime),
                reason="ScheduledDowntime" if in_downtime else "AllAvailable",
                message=", ".join(sorted(in_downtime)),
                generation=generation,
                now=now,
            ),
        )
        conditions = set_condition(
            conditions,
            condition(
                PROGRESSING,
                status=False,
                reason="Converged",
                message="",
                generation=generation,
                now=now,
            ),
        )
        edge = next_downtime_edge(site, now)
        requeue = (edge - now).total_seconds() + 1 if edge is not None else None
        status = {
            "observedGeneration": generation,
            "rses": rses,
            "registered": registered,
            "available": available,
            "conditions": conditions,
        }
        return Outcome(status, events, requeue)

    def holding_data(self, site: Site, ref: ResourceRef) -> list[str]:
        """Why the Site may not go yet: its RSEs are the destination of Steward's rules.

        Removing a Site while rules still place data on it would leave those replicas without
        a declared home; the finalizer waits until the rules are gone or moved. Rucio itself
        refuses to delete an RSE that is not empty, so the RSEs stay registered.
        """
        mine = {rse.name for rse in site.spec.rses}
        by_expression: dict[str, int] = {}
        for rule in self.rucio.list_rules():
            by_expression[rule.rse_expression] = by_expression.get(rule.rse_expression, 0) + 1
        targeted: dict[str, int] = {}
        for expression, count in by_expression.items():
            try:
                matched = set(self.rucio.list_rses(expression))
            except PermanentError:
                continue  # the expression selects nothing any more: no data placed by it here
            for name in matched & mine:
                targeted[name] = targeted.get(name, 0) + count
        busy = [
            f"{name} may hold data of {count} Rucio rules"
            for name, count in sorted(targeted.items())
        ]
        if not busy:
            self._record(ref, "site.release", "success", "no rules target its RSEs")
        return busy

    def unreachable(self, ref: ResourceRef, error: TransientError, old: dict[str, Any]) -> Outcome:
        """Status when Rucio cannot be reached: Degraded with the reason, the rest kept."""
        now = self.clock()
        conditions = set_condition(
            old.get("conditions"),
            condition(
                DEGRADED,
                status=True,
                reason="RucioUnavailable",
                message=str(error),
                generation=ref.generation,
                now=now,
            ),
        )
        return Outcome(
            {**old, "conditions": conditions}, [("Warning", "RucioUnavailable", str(error))]
        )

    def _record(self, ref: ResourceRef, action: str, result: str, message: str) -> None:
        self.audit.record(
            AuditRecord(
                resource=ref, action=action, actor=self.actor, result=result, message=message
            )
        )


def _declared(site: Site, name: str) -> Availability:
    rse = next(r for r in site.spec.rses if r.name == name)
    return Availability(rse.availability_read, rse.availability_write, rse.availability_delete)
