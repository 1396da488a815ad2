"""Disaster-recovery drill: recall a sample of tape-only files and prove they read back intact.

Use case 22 of 000_923afb1a7a641d92.txt wants data "backed up for disaster recovery in a manner
that makes the data retrievable in a timely manner"; LDM-230 2.4.3.2.2 has Observing Operations
"periodically test a restore in a disaster recovery scenario". A copy nobody has read back is a
hope, not a backup, so the drill:

1. samples N files whose only AVAILABLE replica is on a custodial TAPE RSE (datasets of a scope
   and metadata drawn uniformly with a seeded reservoir, then files among theirs: a single
   pass over the listing, in the memory of the sample);
2. recalls them to a scratch DISK RSE with short-lived Rucio rules (one per file, sourced from
   the tape, activity ``Staging``), tagged with the drill run's own owner tag;
3. waits (up to a timeout) for Rucio to satisfy the rules, noting each file's time to recall
   from Rucio's own timestamps;
4. reads every recalled replica back through the scratch RSE's protocol and compares its size,
   Adler-32 and MD5 with the catalogue;
5. releases the rules (expired at once, replicas purged), also after a failure or timeout;
   should the drill itself die, the rules' lifetime releases them;
6. reports: a printed report (`DrillReport.lines`), a row per rule and a summary row in the
   audit trail (kind ``DisasterRecoveryDrill``), and Prometheus metrics (`drill_metrics`).

It is a command, not a resource: a drill has a start and an end and its result is a report, so
a Kubernetes CronJob (schedule, history, ``concurrencyPolicy: Forbid``, failed-job alerts)
runs it; a custom resource would re-implement the CronJob.

It never adopts: Rucio answers a rule identical to an existing one (same account, destination
and copies) with that rule, and a rule the drill did not create is neither counted as a
recall nor released.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Gauge, Histogram

from steward.exceptions import ConfigurationError, PermanentError, StewardError
from steward.observability import EXTERNAL_ACTIONS
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.ownership import owner_tag
from steward.storage.rucio import FileReplica, RucioStorage, Rule, RuleSpec, RuleState

__all__ = [
    "AUDIT_KIND",
    "DrillFile",
    "DrillReport",
    "DrillRequest",
    "DrillService",
    "Outcome",
    "drill_metrics",
    "reservoir",
]

AUDIT_KIND = "DisasterRecoveryDrill"
"""``kind`` of the drill's audit rows; the run id is the name."""

OVERSAMPLE = 4
"""Datasets drawn per file wanted: some hold no tape-only file."""

T = TypeVar("T")


class Outcome(StrEnum):
    """What happened to one sampled file."""

    VERIFIED = "Verified"
    """Recalled, read back, size and checksums equal to the catalogue's."""
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    """Recalled and read, but the bytes differ from the catalogue."""
    UNREADABLE = "Unreadable"
    """Recalled according to Rucio, but no bytes could be read from the scratch RSE."""
    STUCK = "Stuck"
    """Rucio could not recall it (the rule is STUCK)."""
    TIMEOUT = "Timeout"
    """Not recalled before the drill's timeout."""
    NOT_OWNED = "NotOwned"
    """A rule identical to the drill's existed already; the drill did not recall the file."""


@dataclass(frozen=True)
class DrillRequest:
    """What to drill."""

    scope: str
    """Scope to sample from (``raw``)."""
    tape: str
    """The custodial TAPE RSE whose copies are tested."""
    scratch: str
    """A DISK RSE to recall to."""
    files: int = 10
    """Files to sample."""
    match: Mapping[str, str] = field(default_factory=dict)
    """Metadata the sampled datasets must have."""
    lifetime: timedelta = timedelta(hours=6)
    """Lifetime of the recall rules: they expire even if the drill dies."""
    timeout: timedelta = timedelta(hours=4)
    """How long to wait for the recall: what "in a timely manner" means here."""
    poll: timedelta = timedelta(seconds=30)
    """Time between looks at the rules."""
    seed: int | None = None
    """Random seed of the sample (recorded in the report; random when None)."""

    def __post_init__(self) -> None:
        if self.files < 1:
            msg = f"a drill needs at least one file, not {self.files}"
            raise PermanentError(msg)
        if self.lifetime <= self.timeout:
            msg = (
                f"the rules' lifetime ({self.lifetime}) must exceed the timeout "
                f"({self.timeout}), or rules would expire while the drill waits"
            )
            raise PermanentError(msg)


@dataclass
class DrillFile:
    """One sampled file and what the drill found."""

    did: str
    bytes: int
    adler32: str | None
    md5: str | None
    rule_id: str | None = None
    outcome: Outcome | None = None
    recall_seconds: float | None = None
    """From the rule's creation to OK, by Rucio's own clock."""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "did": self.did,
            "bytes": self.bytes,
            "adler32": self.adler32,
            "md5": self.md5,
            "ruleId": self.rule_id,
            "outcome": self.outcome.value if self.outcome else None,
            "recallSeconds": self.recall_seconds,
            "detail": self.detail,
        }


@dataclass
class DrillReport:
    """The result of one drill."""

    run_id: str
    request: DrillRequest
    seed: int
    started_at: datetime
    finished_at: datetime | None = None
    files: list[DrillFile] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    """Rule ids the drill created and released."""
    error: str = ""
    """Why the drill stopped early, if it did."""

    @property
    def verified(self) -> int:
        """Files recalled and read back intact."""
        return sum(1 for f in self.files if f.outcome is Outcome.VERIFIED)

    @property
    def failures(self) -> int:
        """Files not verified, for whatever reason."""
        return len(self.files) - self.verified

    @property
    def passed(self) -> bool:
        """Every sampled file (at least one) was recalled and verified, without error."""
        return bool(self.files) and not self.failures and not self.error

    @property
    def bytes(self) -> int:
        """Bytes sampled."""
        return sum(f.bytes for f in self.files)

    def recall_times(self) -> list[float]:
        """Times to recall of the files Rucio recalled."""
        return [f.recall_seconds for f in self.files if f.recall_seconds is not None]

    def lines(self) -> list[str]:
        """The report for people."""
        req = self.request
        title = (
            f"Disaster-recovery drill {self.run_id} (seed {self.seed}): {len(self.files)} "
            f"files ({self.bytes} bytes) of scope {req.scope} held only on {req.tape}, "
            f"recalled to {req.scratch}"
        )
        lines = [title]
        for f in self.files:
            took = f" in {f.recall_seconds:.0f} s" if f.recall_seconds is not None else ""
            outcome = f.outcome.value if f.outcome else "Unknown"
            lines.append(f"  {f.did}  {outcome}{took}" + (f": {f.detail}" if f.detail else ""))
        times = self.recall_times()
        timing = (
            f"time to recall: max {max(times):.0f} s, mean {sum(times) / len(times):.0f} s"
            if times
            else "nothing recalled"
        )
        lines.append(
            f"Summary: {self.verified} verified, {self.failures} failed; {timing}; "
            f"{len(self.released)} rules released."
        )
        if self.error:
            lines.append(f"Drill stopped: {self.error}")
        lines.append("PASSED" if self.passed else "FAILED")
        return lines

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (``--format json`` and the audit trail's summary row)."""
        times = self.recall_times()
        return {
            "runId": self.run_id,
            "seed": self.seed,
            "scope": self.request.scope,
            "match": dict(self.request.match),
            "tape": self.request.tape,
            "scratch": self.request.scratch,
            "startedAt": self.started_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
            "files": [f.to_json() for f in self.files],
            "verified": self.verified,
            "failures": self.failures,
            "bytes": self.bytes,
            "recallSecondsMax": max(times) if times else None,
            "recallSecondsMean": sum(times) / len(times) if times else None,
            "released": list(self.released),
            "error": self.error or None,
            "passed": self.passed,
        }


def reservoir(items: Iterable[T], size: int, rng: random.Random) -> list[T]:
    """A uniform sample of ``size`` items from a stream of unknown length, in one pass.

    Algorithm R: memory is the sample, whatever the length of the stream.
    """
    sample: list[T] = []
    for seen, item in enumerate(items):
        if seen < size:
            sample.append(item)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                sample[slot] = item
    return sample


def drill_metrics(report: DrillReport) -> CollectorRegistry:
    """The drill's result as Prometheus metrics, in a registry of their own (to push).

    ``steward_drill_files{outcome}``, ``steward_drill_bytes``, ``steward_drill_failures``,
    ``steward_drill_recall_seconds`` (a histogram of the times to recall),
    ``steward_drill_passed`` and ``steward_drill_last_run_timestamp_seconds``, labelled with
    the tape and scratch RSEs.
    """
    registry = CollectorRegistry()
    labels = {"tape": report.request.tape, "scratch": report.request.scratch}
    names = list(labels)
    files = Gauge(
        "steward_drill_files",
        "Files of the last drill by outcome",
        [*names, "outcome"],
        registry=registry,
    )
    for outcome in Outcome:
        count = sum(1 for f in report.files if f.outcome is outcome)
        files.labels(**labels, outcome=outcome.value).set(count)
    Gauge(
        "steward_drill_bytes", "Bytes sampled by the last drill", names, registry=registry
    ).labels(**labels).set(report.bytes)
    Gauge(
        "steward_drill_failures", "Files the last drill could not verify", names, registry=registry
    ).labels(**labels).set(report.failures)
    Gauge(
        "steward_drill_passed", "1 if the last drill verified every file", names, registry=registry
    ).labels(**labels).set(1 if report.passed else 0)
    Gauge(
        "steward_drill_last_run_timestamp_seconds",
        "When the last drill finished",
        names,
        registry=registry,
    ).labels(**labels).set((report.finished_at or report.started_at).timestamp())
    recall = Histogram(
        "steward_drill_recall_seconds",
        "Time from recall rule to OK, per file, in the last drill",
        names,
        buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800),
        registry=registry,
    )
    for seconds in report.recall_times():
        recall.labels(**labels).observe(seconds)
    return registry


def _now() -> datetime:
    return datetime.now(UTC)


class DrillService:
    """Runs drills; owns their Rucio rules from creation to release.

    Parameters
    ----------
    rucio
        The Rucio storage.
    audit
        Where every rule and the summary are recorded.
    cluster_id
        This cluster's identity, for the owner tag of the drill's rules.
    actor
        Who runs the drill.
    clock, sleep
        Time, injectable so tests need not wait.
    """

    def __init__(
        self,
        rucio: RucioStorage,
        audit: AuditService,
        *,
        cluster_id: str,
        actor: str,
        clock: Callable[[], datetime] = _now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rucio = rucio
        self.audit = audit
        self.cluster_id = cluster_id
        self.actor = actor
        self.clock = clock
        self.sleep = sleep

    def run(self, request: DrillRequest) -> DrillReport:
        """Sample, recall, verify, report, release; see the module docstring.

        Raises
        ------
        PermanentError
            The RSEs are not a custodial TAPE and a DISK RSE (nothing is done).
        """
        self._check_rses(request)
        seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**32)
        report = DrillReport(uuid.uuid4().hex, request, seed, self.clock())
        ref = ResourceRef(kind=AUDIT_KIND, name=report.run_id)
        tag = owner_tag(self.cluster_id, f"drill-{report.run_id}")
        created: list[str] = []
        try:
            report.files = [
                DrillFile(f.did, f.bytes or 0, f.adler32, f.md5)
                for f in self._sample(request, random.Random(seed))  # noqa: S311 - a sample
            ]
            if not report.files:
                report.error = (
                    f"no file of scope {request.scope} has its only available replica on "
                    f"{request.tape}"
                )
            else:
                created = self._recall(request, report, ref, tag)
                self._wait(request, report, tag)
                self._verify(request, report)
        except StewardError as error:
            report.error = str(error)
        finally:
            self._release(report, ref, created)
            report.finished_at = self.clock()
            self.audit.record(
                AuditRecord(
                    ref,
                    "drill.report",
                    self.actor,
                    "success" if report.passed else "failure",
                    request.tape,
                    after=report.to_json(),
                    message=report.lines()[-2],
                )
            )
        return report

    def _check_rses(self, request: DrillRequest) -> None:
        tape = self.rucio.get_rse_info(request.tape)
        if tape.type != "TAPE" or not tape.flag("custodial"):
            msg = (
                f"{request.tape} is not a custodial TAPE RSE (type {tape.type}, custodial "
                f"{tape.attributes.get('custodial', 'unset')}); the drill tests tape copies"
            )
            raise PermanentError(msg)
        scratch = self.rucio.get_rse_info(request.scratch)
        if scratch.type != "DISK":
            msg = f"{request.scratch} is {scratch.type}; recall to a DISK RSE"
            raise PermanentError(msg)

    def _sample(self, request: DrillRequest, rng: random.Random) -> list[FileReplica]:
        """Files whose only available replica is on the tape RSE, sampled in one pass."""
        datasets = reservoir(
            self.rucio.iter_dids(request.scope, request.match, did_type="dataset"),
            request.files * OVERSAMPLE,
            rng,
        )
        rng.shuffle(datasets)
        seen: set[str] = set()
        tape_only: list[FileReplica] = []
        for dataset in datasets:
            for file in self.rucio.list_file_replicas([dataset.did]):
                if file.did not in seen and file.available_on() == {request.tape}:
                    seen.add(file.did)
                    tape_only.append(file)
        return reservoir(tape_only, request.files, rng)

    def _recall(
        self, request: DrillRequest, report: DrillReport, ref: ResourceRef, tag: str
    ) -> list[str]:
        """Create the recall rules; return the ids of those the drill created (and owns)."""
        spec = RuleSpec(
            rse_expression=request.scratch,
            lifetime=request.lifetime,
            activity="Staging",
            source_replica_expression=request.tape,
            comment=tag,
        )
        added = self.rucio.add_rules([f.did for f in report.files], spec)
        created = []
        records = []
        for file in report.files:
            rule_id = added.rule_ids[file.did]
            if file.did in added.adopted:
                file.outcome = Outcome.NOT_OWNED
                file.detail = (
                    f"rule {rule_id} to {request.scratch} existed already; not the drill's"
                )
                continue
            file.rule_id = rule_id
            created.append(rule_id)
            records.append(
                AuditRecord(
                    ref,
                    "rucio.rule.add",
                    self.actor,
                    target=rule_id,
                    after={"did": file.did, "rse": request.scratch, "source": request.tape},
                )
            )
        EXTERNAL_ACTIONS.labels(AUDIT_KIND, "rucio.rule.add").inc(len(records))
        self.audit.record_many(records)
        return created

    def _wait(self, request: DrillRequest, report: DrillReport, tag: str) -> None:
        """Look at the rules until all are OK or the timeout passes."""
        recalling = {f.rule_id: f for f in report.files if f.rule_id and f.outcome is None}
        deadline = self.clock() + request.timeout
        while True:
            rules = self.rucio.refresh_rules(recalling, comment=tag)
            for rule_id, file in list(recalling.items()):
                rule = rules.get(rule_id)
                if rule is None:
                    file.outcome, file.detail = Outcome.STUCK, f"rule {rule_id} disappeared"
                    del recalling[rule_id]
                elif rule.state is RuleState.OK:
                    file.recall_seconds = _recall_seconds(rule)
                    del recalling[rule_id]
            if not recalling or self.clock() >= deadline:
                break
            self.sleep(request.poll.total_seconds())
        for rule_id, file in recalling.items():
            rule = rules.get(rule_id)
            if rule is not None and rule.state is RuleState.STUCK:
                file.outcome = Outcome.STUCK
                file.detail = f"rule {rule_id} STUCK: {rule.error or 'no reason given'}"
            else:
                state = rule.state.value if rule is not None else "gone"
                file.outcome = Outcome.TIMEOUT
                file.detail = f"rule {rule_id} still {state} after {request.timeout}"

    def _verify(self, request: DrillRequest, report: DrillReport) -> None:
        """Read every recalled replica back and compare it with the catalogue."""
        recalled = [f for f in report.files if f.outcome is None and f.recall_seconds is not None]
        if not recalled:
            return
        replicas = {
            r.did: r
            for r in self.rucio.list_file_replicas(
                [f.did for f in recalled], rse_expression=request.scratch
            )
        }
        for file in recalled:
            pfns = replicas[file.did].pfns.get(request.scratch, ()) if file.did in replicas else ()
            if not pfns:
                file.outcome = Outcome.UNREADABLE
                file.detail = f"Rucio lists no replica on {request.scratch}"
                continue
            try:
                read = self.rucio.read_replica(request.scratch, pfns[0])
            except ConfigurationError:
                raise  # no file could be read: the drill stops, saying why
            except StewardError as error:
                file.outcome, file.detail = Outcome.UNREADABLE, str(error)
                continue
            differs = [
                f"{what} {mine} read, {theirs} in the catalogue"
                for what, mine, theirs in (
                    ("size", read.bytes, file.bytes),
                    ("adler32", read.adler32, file.adler32),
                    ("md5", read.md5, file.md5),
                )
                if theirs is not None and str(mine).lower() != str(theirs).lower()
            ]
            file.outcome = Outcome.CHECKSUM_MISMATCH if differs else Outcome.VERIFIED
            file.detail = "; ".join(differs)

    def _release(self, report: DrillReport, ref: ResourceRef, created: list[str]) -> None:
        """Expire the drill's rules now and purge their replicas; record each release.

        A release that fails is reported, not raised: the rule's lifetime ends it anyway.
        """
        records = []
        for rule_id in created:
            try:
                self.rucio.update_rule(rule_id, lifetime=timedelta(0), purge_replicas=True)
            except StewardError as error:
                records.append(
                    AuditRecord(
                        ref,
                        "rucio.rule.release",
                        self.actor,
                        "failure",
                        rule_id,
                        message=str(error),
                    )
                )
                report.error = report.error or f"rule {rule_id} not released: {error}"
                continue
            report.released.append(rule_id)
            records.append(AuditRecord(ref, "rucio.rule.release", self.actor, target=rule_id))
        EXTERNAL_ACTIONS.labels(AUDIT_KIND, "rucio.rule.release").inc(len(report.released))
        self.audit.record_many(records)


def _recall_seconds(rule: Rule) -> float | None:
    if rule.created_at is None or rule.updated_at is None:
        return None
    return max(0.0, (rule.updated_at - rule.created_at).total_seconds())
