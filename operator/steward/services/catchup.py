"""Catch-up archiving (LDM-230 2.2.2.2, 2.2.3.1; use case 17): drain a backlog at up to 2x.

The archiving service must archive "at the nominal frame rate" and "perform catch-up
archiving at twice that rate" after an interruption (LDM-230 2.2.2.2), "expeditious catch-up
archiving after service interruptions" (2.2.3.1). For a ReplicationRule this means: when its
rules have fallen behind (a backlog of rules not OK for longer than ``spec.catchUp.after``),
Rucio is asked to give them more: a higher rule priority, which Rucio passes on to the rules'
queued transfers (``rucio.core.rule.update_rule``), and a larger transfer limit for the
activity into the destination, the activity's share, up to twice the nominal one. Both go back
to nominal once the backlog is empty.

Decisions here are plain functions over the rules Rucio listed and the status the last pass
wrote, so a pass killed at any line is repeated with the same outcome (level-based): whether
catch-up is on is worked out again from Rucio's rules each pass, and the status only carries
the hysteresis (once started, it lasts until the backlog is empty, not merely below the
threshold that started it) and the start time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from steward.models.common import parse_timestamp
from steward.models.replication import MAX_CATCH_UP_FACTOR, ReplicationRuleSpec
from steward.storage.rucio import Rule, RuleState

__all__ = [
    "BACKLOG_STATES",
    "CATCHING_UP",
    "CatchUpPlan",
    "backlogged",
    "plan_catch_up",
    "raised_transfers",
    "wanted_priority",
]

BACKLOG_STATES = frozenset({RuleState.REPLICATING, RuleState.STUCK, RuleState.INJECT})
"""Rule states that a faster transfer share drains. SUSPENDED rules are held on purpose (a
transfer window, use case 19) and WAITING_APPROVAL ones wait for a person: neither is a
backlog that more priority would shorten."""


CATCHING_UP = "CatchingUp"
"""The condition saying whether a ReplicationRule is catching up (True) or at nominal."""


@dataclass(frozen=True)
class CatchUpPlan:
    """What this pass asks of Rucio for catch-up, and what status says about it."""

    active: bool
    backlog: int
    since: datetime | None
    priority: int
    """Priority of the resource's rules that are not OK (nominal when not catching up)."""
    nominal_priority: int
    transfers: int | None
    """The activity's transfer limit into the destination; None when not managed."""
    started: bool = False
    ended: bool = False

    def status(self, boosted: int) -> dict[str, Any]:
        """Status ``catchUp``."""
        return {
            "active": self.active,
            "backlog": self.backlog,
            "since": self.since.isoformat().replace("+00:00", "Z") if self.since else None,
            "priority": self.priority,
            "transfers": self.transfers,
            "boosted": boosted,
        }


def backlogged(rules: Iterable[Rule], spec: ReplicationRuleSpec, now: datetime) -> list[Rule]:
    """Rules not OK (`BACKLOG_STATES`) for longer than ``spec.catchUp.after``.

    A rule's age counts from its creation in Rucio: a rule created during an outage is in the
    backlog once it has waited ``after``; a rule whose creation time Rucio did not give is
    not counted (an error postpones, never decides).
    """
    assert spec.catch_up is not None  # noqa: S101 - callers check
    cutoff = now - spec.catch_up.after
    return [
        rule
        for rule in rules
        if rule.state in BACKLOG_STATES
        and rule.created_at is not None
        and rule.created_at <= cutoff
    ]


def raised_transfers(nominal: int, factor: float) -> int:
    """The transfer limit while catching up: ``nominal * factor``, at least one more, at most 2x."""
    ceiling = math.floor(nominal * MAX_CATCH_UP_FACTOR)
    return min(ceiling, max(nominal + 1, math.floor(nominal * factor)))


def plan_catch_up(
    spec: ReplicationRuleSpec,
    rules: Iterable[Rule],
    old: Mapping[str, Any] | None,
    now: datetime,
) -> CatchUpPlan | None:
    """Decide whether the resource catches up this pass; None without ``spec.catchUp``.

    Catch-up starts when the backlog reaches ``catchUp.backlog`` rules and lasts until it is
    empty (``old``, the last status ``catchUp``, says whether it was on).
    """
    catch_up = spec.catch_up
    if catch_up is None:
        return None
    known = old or {}
    backlog = len(backlogged(rules, spec, now))
    was_active = bool(known.get("active"))
    active = backlog >= catch_up.backlog or (was_active and backlog > 0)
    since: datetime | None = None
    if active:
        since = _since(known.get("since")) if was_active else None
        since = since or now
    nominal = catch_up.transfers
    transfers = None
    if nominal is not None:
        transfers = raised_transfers(nominal, catch_up.factor) if active else nominal
    return CatchUpPlan(
        active=active,
        backlog=backlog,
        since=since,
        priority=spec.catch_up_priority() if active else spec.priority,
        nominal_priority=spec.priority,
        transfers=transfers,
        started=active and not was_active,
        ended=was_active and not active,
    )


def wanted_priority(plan: CatchUpPlan | None, rule: Rule, nominal: int) -> int:
    """The priority ``rule`` should have.

    While catching up, rules not OK get the raised priority, and rules already raised keep
    it (resetting an OK rule mid-catch-up would cost a call per rule for nothing); outside
    catch-up, every rule has the nominal priority.
    """
    if plan is None or not plan.active:
        return nominal
    if rule.state is not RuleState.OK or rule.priority == plan.priority:
        return plan.priority
    return nominal


def _since(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None
