"""SIGKILL the operator at random points: the schedule and the loop of the crash-safety proofs.

Used by the end-to-end crash test (tests/e2e) and its full-size run in ``bench/crashes.py``.
A kill comes at one of three kinds of moment, so that the operator dies at many different
lines, not always just after one Rucio call:

- a random delay after it is up (anywhere: a watch starting, a login, a handler);
- in a burst of Rucio calls: after a random number of calls since it started, read from its
  ``steward_rucio_api_calls`` metric (between a rule's creation and its audit row, between two
  batches...);
- in a burst of status writes: after a random number of resources got a status since it
  started (between a reconcile's end and kopf's patch, between two patches...).

Each moment has a deadline; a moment that does not come before it (nothing left to do) is a
kill at the deadline, and is reported as such.
"""

from __future__ import annotations

import enum
import random
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from steward.services.audit import AuditService
from steward.storage.audit import AuditFilter
from steward.storage.rucio import Rule
from steward.testing.childprocess import free_port, poll
from steward.testing.operatorprocess import OperatorProcess

__all__ = [
    "Crash",
    "CrashOutcome",
    "Kill",
    "Moment",
    "crash_outcome",
    "crash_repeatedly",
    "kill_plan",
    "rucio_calls",
]

_METRIC: Final = "steward_rucio_api_calls"


class Moment(enum.Enum):
    """When a kill comes (see the module docstring)."""

    DELAY = "delay"
    RUCIO_CALLS = "rucio-calls"
    STATUS_WRITES = "status-writes"


@dataclass(frozen=True, slots=True)
class Kill:
    """One planned kill: its moment and how far into it (seconds, calls or statuses)."""

    moment: Moment
    amount: float


@dataclass(frozen=True, slots=True)
class Crash:
    """One kill as it happened: what was planned, and whether the moment came in time."""

    kill: Kill
    reached: bool
    start_seconds: float
    """How long the operator took to start (and answer its liveness probe) before it."""
    waited_seconds: float
    """How long after the start the kill came."""


def kill_plan(
    kills: int,
    rng: random.Random,
    *,
    max_delay: float = 2.0,
    max_calls: int = 40,
    max_statuses: int = 10,
) -> list[Kill]:
    """``kills`` kills, the three moments in turn (shuffled), each at a random depth.

    ``max_statuses`` should not exceed the new statuses one round brings (its wave of
    resources), or those kills come at the deadline instead.
    """
    moments = [list(Moment)[index % len(Moment)] for index in range(kills)]
    rng.shuffle(moments)
    plan = []
    for moment in moments:
        if moment is Moment.DELAY:
            amount = rng.uniform(0.0, max_delay)
        elif moment is Moment.RUCIO_CALLS:
            amount = float(rng.randint(1, max_calls))
        else:
            amount = float(rng.randint(1, max_statuses))
        plan.append(Kill(moment, amount))
    return plan


def rucio_calls(process: OperatorProcess) -> int | None:
    """The operator's Rucio API calls so far (its metric), None if it does not answer."""
    port = process.env.get("STEWARD_METRICS_PORT")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{_METRIC} "):
            return int(float(line.split()[1]))
    return None


def crash_repeatedly(
    process: OperatorProcess,
    plan: list[Kill],
    *,
    statuses: Callable[[], int],
    before_each: Callable[[int], object] = lambda _index: None,
    deadline: float = 15.0,
) -> list[Crash]:
    """Start, work, SIGKILL, for each planned kill; leave the operator running at the end.

    Parameters
    ----------
    process
        The operator (stopped or running); each start gets a new metrics port.
    plan
        The kills, in order.
    statuses
        How many resources have a status (the status-write moments count these).
    before_each
        Called with the kill's index once the operator is up, before the moment is awaited:
        new work for it (a wave of resources) so that each kill meets a burst.
    deadline
        Seconds to wait for a moment before killing anyway.
    """
    crashes = []
    for index, kill in enumerate(plan):
        started = time.monotonic()
        _start(process)
        up = time.monotonic()
        calls_before = rucio_calls(process) or 0
        statuses_before = statuses()
        before_each(index)
        reached = _await(
            process,
            kill,
            calls_before=calls_before,
            statuses=statuses,
            statuses_before=statuses_before,
            deadline=deadline,
        )
        killed = time.monotonic()
        process.kill(signal.SIGKILL)
        crashes.append(Crash(kill, reached, up - started, killed - up))
    _start(process)
    return crashes


def _await(
    process: OperatorProcess,
    kill: Kill,
    *,
    calls_before: int,
    statuses: Callable[[], int],
    statuses_before: int,
    deadline: float,
) -> bool:
    """Wait for the kill's moment; False if the deadline came first."""
    if kill.moment is Moment.DELAY:
        time.sleep(kill.amount)
        return True

    def probe() -> bool:
        if kill.moment is Moment.RUCIO_CALLS:
            return (rucio_calls(process) or 0) >= calls_before + kill.amount
        return statuses() >= statuses_before + kill.amount

    try:
        poll(probe, timeout=deadline, what=kill.moment.value, interval=0.02)
    except TimeoutError:
        return False
    return True


def _start(process: OperatorProcess) -> None:
    process.env["STEWARD_METRICS_PORT"] = str(free_port())
    process.start(timeout=90)


@dataclass(frozen=True, slots=True)
class CrashOutcome:
    """What the kills left in Rucio and the audit trail; every list is empty when all is well."""

    rules: int
    """Rules found."""
    duplicates: list[tuple[str, str]]
    """(owner tag, DID) pairs with more than one rule."""
    unowned: list[str]
    """Rules whose comment is no resource's owner tag."""
    missing: list[tuple[str, str]]
    """(owner tag, DID) pairs expected but without a rule."""
    unaudited: list[str]
    """Rules without a successful ``rucio.rule.add`` or ``rucio.rule.adopt`` row naming them
    and their resource."""
    adopted: int
    """``rucio.rule.adopt`` rows: rules a crash left unrecorded, taken back on a later pass."""
    findings: int
    """What the audit chain's verification found (tampering, gaps)."""


def crash_outcome(
    rules: Iterable[Rule],
    expected: Mapping[str, tuple[str, str]],
    audit: AuditService,
    namespace: str,
) -> CrashOutcome:
    """Check the rules of a crash run against what the resources declared.

    Parameters
    ----------
    rules
        Every rule in the run's scope.
    expected
        Owner tag -> (resource UID, the DID it selects).
    audit
        The operator's audit trail.
    namespace
        The resources' namespace.
    """
    found = list(rules)
    per_owner = Counter((rule.comment or "", rule.did) for rule in found)
    rows = audit.query(AuditFilter(kind="ReplicationRule", namespace=namespace, result="success"))
    recorded = {
        (row.uid, row.target)
        for row in rows
        if row.action in {"rucio.rule.add", "rucio.rule.adopt"}
    }
    return CrashOutcome(
        rules=len(found),
        duplicates=sorted(key for key, count in per_owner.items() if count > 1),
        unowned=sorted(rule.id for rule in found if rule.comment not in expected),
        missing=sorted(
            (tag, did) for tag, (_uid, did) in expected.items() if (tag, did) not in per_owner
        ),
        unaudited=sorted(
            rule.id
            for rule in found
            if (expected.get(rule.comment or "", ("", ""))[0], rule.id) not in recorded
            and rule.comment in expected
        ),
        adopted=sum(1 for row in rows if row.action == "rucio.rule.adopt"),
        findings=len(audit.verify()),
    )
