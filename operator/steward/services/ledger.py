"""The ledger's read side: reports, provenance, and what retention must ask before deleting.

Use cases 8-10 (all outputs of a pipeline execution; all inputs of an execution; the inputs of
the execution that produced a file), 11 (monitor executions), 15 and 16 (non-science
questions: a bad node, runtimes, memory, failures) are one call each here, backing
``steward report`` and ``steward provenance``.

Two plain functions serve the deletion gate and retention's review gate (branch i12), so they
never read ledger tables themselves:

- `LedgerService.inputs_in_use`: which of these DIDs are inputs of a campaign that has not
  finished (design.md: data that is input to a running Campaign is never deleted). A
  campaign counts as unfinished until it is closed out, terminated or deleted, so a failed
  campaign that may still be retried keeps its inputs.
- `LedgerService.campaign_outputs`: the outputs a campaign recorded, whether it failed
  (terminated, or invocations failed for good) and whether its outputs wait for the
  failure review (LDM-230 3.1.3.4.2). Steward's campaign operator never deletes outputs;
  termination only marks them ``review: pending``.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from steward.exceptions import NotFoundError
from steward.services.campaign.plan import coverage_inputs, data_id_hash
from steward.storage.ledger import LedgerCampaign, LedgerInvocation, LedgerStore, decode_steps

__all__ = [
    "CampaignOutputs",
    "CampaignRef",
    "InvocationRecord",
    "LedgerService",
    "Provenance",
    "Report",
    "percentiles",
]


@dataclass(frozen=True)
class CampaignRef:
    """Which campaign, by identity."""

    uid: str
    namespace: str
    name: str


@dataclass(frozen=True)
class CampaignOutputs:
    """What retention's review gate needs to know about one campaign's outputs."""

    campaign: CampaignRef
    outputs: list[str]
    """Output DIDs the invocations reported (and Steward registered in Rucio)."""
    failed: bool
    """Terminated, or some invocations failed for good (not force-accepted)."""
    outcome: str | None
    """None while unfinished; Terminated, ClosedOut or Deleted."""
    review_pending: bool
    """The outputs wait for the failure review; nothing may delete them before it is done."""


@dataclass(frozen=True)
class InvocationRecord:
    """One invocation and the attempt that produced its result."""

    campaign: CampaignRef
    step: str
    index: int
    data_id: dict[str, Any]
    state: str
    attempts: int
    node: str | None
    started_at: datetime | None
    ended_at: datetime | None
    memory: int
    site: str | None = None
    """The Site whose cluster ran its last attempt."""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "campaign": f"{self.campaign.namespace}/{self.campaign.name}",
            "uid": self.campaign.uid,
            "step": self.step,
            "index": self.index,
            "dataId": self.data_id,
            "state": self.state,
            "attempts": self.attempts,
            "node": self.node,
            "site": self.site,
            "startedAt": _iso(self.started_at),
            "endedAt": _iso(self.ended_at),
            "memory": self.memory,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }


@dataclass(frozen=True)
class Provenance:
    """Where a DID came from and who read it."""

    did: str
    made_by: list[InvocationRecord]
    """The invocation(s) that wrote it (one, unless a campaign was re-run under a new UID)."""
    read_by: list[InvocationRecord]
    """Invocations that took it as input."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "did": self.did,
            "madeBy": [r.to_dict() for r in self.made_by],
            "readBy": [r.to_dict() for r in self.read_by],
        }


@dataclass(frozen=True)
class Report:
    """``steward report``: counts, failures by class and node, runtime and memory."""

    campaign: CampaignRef
    site: str
    invocations: int
    outcome: str | None
    review: str | None
    steps: list[dict[str, Any]]
    failures: dict[str, int]
    nodes: list[dict[str, Any]]
    """Per node: attempts, failures by class; most failures first (use case 16)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "campaign": f"{self.campaign.namespace}/{self.campaign.name}",
            "uid": self.campaign.uid,
            "site": self.site,
            "invocations": self.invocations,
            "outcome": self.outcome,
            "review": self.review,
            "steps": self.steps,
            "failures": self.failures,
            "nodes": self.nodes,
        }


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50, p90, p99 and max of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        only = ordered[0]
        return {"p50": only, "p90": only, "p99": only, "max": only}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": ordered[-1]}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return _utc(value).isoformat().replace("+00:00", "Z")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ref(record: LedgerCampaign) -> CampaignRef:
    return CampaignRef(record.uid, record.namespace, record.name)


def _coverage(inv: LedgerInvocation) -> tuple[str, ...]:
    return coverage_inputs(json.loads(inv.data_id))


def _label(klass: str, exit_code: int | None) -> str:
    return f"ExitCode {exit_code}" if klass == "ExitCode" else klass


@dataclass
class LedgerService:
    """Reads the ledger; owns its (read-only) transactions."""

    sessions: sessionmaker[Session]

    def find(self, campaign: str, namespace: str | None = None) -> CampaignRef:
        """The newest campaign named ``campaign`` (``namespace/name`` or a name).

        Raises
        ------
        NotFoundError
            If the ledger knows no such campaign.
        """
        if "/" in campaign and namespace is None:
            namespace, campaign = campaign.split("/", 1)
        with self.sessions() as session:
            found = LedgerStore(session).campaigns_named(namespace, campaign)
        if not found:
            where = f" in namespace {namespace}" if namespace else ""
            msg = f"no campaign {campaign!r}{where} in the ledger (has the operator started it?)"
            raise NotFoundError(msg)
        return _ref(found[0])

    def report(self, ref: CampaignRef) -> Report:
        """Counts, failures by class and by node, runtime and memory percentiles per step."""
        with self.sessions() as session:
            store = LedgerStore(session)
            record = store.campaign(ref.uid)
            if record is None:
                raise NotFoundError(f"no campaign with UID {ref.uid} in the ledger")
            counts = store.state_counts(ref.uid)
            facts = store.attempt_facts(ref.uid)
            memory = store.memory_facts(ref.uid)
            steps_order = [name for name, _ in decode_steps(record.steps)]
        runtimes: dict[str, list[float]] = defaultdict(list)
        requested: dict[str, list[float]] = defaultdict(list)
        classes: dict[str, Counter[str]] = defaultdict(Counter)
        by_node: dict[str, Counter[str]] = defaultdict(Counter)
        failures: Counter[str] = Counter()
        for step, klass, exit_code, node, started, ended, mem in facts:
            label = _label(klass, exit_code)
            classes[step][label] += 1
            node_name = node or "(never scheduled)"
            by_node[node_name]["attempts"] += 1
            if klass != "Succeeded":
                failures[label] += 1
                by_node[node_name][label] += 1
            elif started is not None and ended is not None:
                runtimes[step].append((_utc(ended) - _utc(started)).total_seconds())
            if mem is not None:
                requested[step].append(float(mem))
        current: dict[str, list[float]] = defaultdict(list)
        for step, mem in memory:
            current[step].append(float(mem))
        steps = [
            {
                "name": step,
                "states": dict(sorted(counts.get(step, {}).items())),
                "attempts": dict(sorted(classes[step].items())),
                "runtimeSeconds": percentiles(runtimes[step]),
                "memoryRequested": percentiles(requested[step]),
                "memoryRaised": sum(1 for m in current[step] if m > min(current[step])),
            }
            for step in steps_order
        ]
        nodes: list[dict[str, Any]] = sorted(
            (
                {
                    "node": node,
                    "attempts": counter["attempts"],
                    "failures": {k: v for k, v in sorted(counter.items()) if k != "attempts"},
                }
                for node, counter in by_node.items()
            ),
            key=lambda n: (-sum(n["failures"].values()), str(n["node"])),
        )
        return Report(
            campaign=ref,
            site=record.site,
            invocations=record.invocations,
            outcome=record.outcome,
            review=record.review,
            steps=steps,
            failures=dict(sorted(failures.items())),
            nodes=nodes,
        )

    def outputs(self, ref: CampaignRef, step: str | None = None) -> list[InvocationRecord]:
        """Every succeeded invocation (of one step) with the outputs it wrote (use case 8)."""
        with self.sessions() as session:
            store = LedgerStore(session)
            record = store.campaign(ref.uid)
            if record is None:
                raise NotFoundError(f"no campaign with UID {ref.uid} in the ledger")
            steps = [s for s in decode_steps(record.steps) if step in {None, s[0]}]
            result: list[InvocationRecord] = []
            for name, depends_on in steps:
                written: dict[int, list[str]] = defaultdict(list)
                for row in store.files(ref.uid, role="output", step=name):
                    written[row.index].append(row.did)
                read: dict[int, list[str]] = defaultdict(list)
                for row in store.files(ref.uid, role="input", step=name):
                    read[row.index].append(row.did)
                for inv in store.invocations(ref.uid, name, states=["succeeded"]):
                    inputs = read[inv.index] if depends_on else _coverage(inv)
                    result.append(self._invocation(ref, inv, inputs, written[inv.index]))
        return result

    def provenance(self, did: str) -> Provenance:
        """Which invocation wrote ``did``, from which inputs; which invocations read it."""
        with self.sessions() as session:
            store = LedgerStore(session)
            made: list[InvocationRecord] = []
            read: list[InvocationRecord] = []
            for row in store.files_named(did):
                [inv] = store.invocations(row.campaign_uid, row.step, indexes=[row.index])
                target = made if row.role == "output" else read
                target.append(self._record(store, inv))
            read.extend(
                self._record(store, inv)
                for inv in store.coverage_invocations(data_id_hash({"did": did}))
                if did in _coverage(inv) and self._first_step(store, inv)
            )
        if not made and not read:
            raise NotFoundError(f"{did} is neither an input nor an output of any campaign")
        return Provenance(did, made, read)

    def _record(self, store: LedgerStore, inv: LedgerInvocation) -> InvocationRecord:
        """One invocation with what it read and wrote, for provenance answers."""
        record = store.campaign(inv.campaign_uid)
        assert record is not None  # noqa: S101 - invocations belong to a campaign row
        files = {
            role: [
                f.did
                for f in store.files(
                    inv.campaign_uid, role=role, step=inv.step, indexes=[inv.index]
                )
            ]
            for role in ("input", "output")
        }
        inputs = files["input"] if not self._first_step(store, inv) else list(_coverage(inv))
        return self._invocation(_ref(record), inv, inputs, files["output"])

    @staticmethod
    def _first_step(store: LedgerStore, inv: LedgerInvocation) -> bool:
        """Whether the invocation's step depends on no other (it reads the coverage set)."""
        record = store.campaign(inv.campaign_uid)
        steps = dict(decode_steps(record.steps)) if record is not None else {}
        return not steps.get(inv.step)

    @staticmethod
    def _invocation(
        ref: CampaignRef,
        inv: LedgerInvocation,
        inputs: Iterable[str],
        outputs: Iterable[str],
    ) -> InvocationRecord:
        return InvocationRecord(
            campaign=ref,
            step=inv.step,
            index=inv.index,
            data_id=json.loads(inv.data_id),
            state=inv.state,
            attempts=inv.attempts,
            node=inv.node,
            started_at=inv.started_at,
            ended_at=inv.ended_at,
            memory=inv.memory,
            site=inv.site,
            inputs=sorted(inputs),
            outputs=sorted(outputs),
        )

    # -- for the deletion gate and retention's review gate (branch i12) --------------------

    def inputs_in_use(self, dids: Iterable[str]) -> dict[str, list[CampaignRef]]:
        """The DIDs among ``dids`` that an unfinished campaign reads, with those campaigns.

        Those are the DIDs of its coverage set and the earlier steps' outputs its later steps
        read, until it is closed out, terminated or deleted, or its staging is released after
        it Succeeded (`steward.storage.ledger.LedgerStore.any_unfinished`).
        """
        wanted = list(dict.fromkeys(dids))
        with self.sessions() as session:
            store = LedgerStore(session)
            if not wanted or not store.any_unfinished():
                return {}
            hashes = {data_id_hash({"did": did}): did for did in wanted}
            found = store.unfinished_inputs(wanted) + store.unfinished_coverage(hashes)
        result: dict[str, list[CampaignRef]] = defaultdict(list)
        for did, record in found:
            ref = _ref(record)
            if ref not in result[did]:
                result[did].append(ref)
        return dict(result)

    def campaigns_reading(
        self, dids: Collection[str], *, excluding: Collection[str] = ()
    ) -> dict[str, str]:
        """The deletion gate's question: which of ``dids`` an unfinished campaign reads.

        Each DID maps to ``namespace/name`` of one such campaign other than the uids in
        ``excluding`` (a campaign releasing its own staging is not its own reader).
        """
        found = {}
        for did, refs in self.inputs_in_use(dids).items():
            readers = [ref for ref in refs if ref.uid not in excluding]
            if readers:
                found[did] = f"{readers[0].namespace}/{readers[0].name}"
        return found

    def campaign_outputs(self, namespace: str, name: str) -> CampaignOutputs | None:
        """Outputs of the newest campaign of that name, and whether it failed; None if unknown."""
        with self.sessions() as session:
            store = LedgerStore(session)
            found = store.campaigns_named(namespace, name)
            if not found:
                return None
            record = found[0]
            outputs = sorted({f.did for f in store.files(record.uid, role="output")})
            counts = store.state_counts(record.uid)
        failed = record.outcome == "Terminated" or any(c.get("failed") for c in counts.values())
        return CampaignOutputs(
            campaign=_ref(record),
            outputs=outputs,
            failed=failed,
            outcome=record.outcome,
            review_pending=record.review == "pending",
        )
