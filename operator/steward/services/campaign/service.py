"""Campaign reconciliation: steps as Indexed Jobs, retries by class, Rucio in and out, a ledger.

LDM-230 3.1.3 is the specification: a campaign runs pipelines (steps, with an ordering
constraint) over a coverage set, at a priority, at one site; inputs are pre-staged (recalled
from tape where needed) and outputs archived; the operator can pause, terminate and close it
out, and the service must tell kills from failures. One pass (`CampaignService.reconcile`,
run on every change and on a short timer) does, in this order:

1. **Enumerate** the coverage set once into the ledger (`steward.schema.ledger`): one row
   per step and invocation, frozen, so a query matching more data later does not change a
   running campaign. Steps added to the spec later get their rows then (after-burners,
   LDM-230 3.1.3.4.1).
2. **Observe**: list the campaign's Jobs, then the ended pods not yet recorded; classify
   each (`steward.services.attempts`), record the attempts, outputs (from the termination
   message) and inputs in one transaction, then drop each pod's ledger finalizer. The Jobs
   are listed first: any index a Job reports failed ended before the pod listing, so its
   attempt is recorded in the same pass (its pod is kept by the finalizer until then).
3. **Act** by ``desiredState``: Running advances the DAG (a step starts when every step it
   depends on succeeded or was force-accepted, the inputs are staged, and a breakpoint is
   approved), creates each step's shard Jobs, reruns what the Jobs gave up on (a rescue Job
   over exactly those invocations; more memory after an OOM kill), applies the operator's
   controls; Paused suspends the Jobs; Terminated deletes them, keeps the ledger and hands
   the outputs to retention's review; ClosedOut waits for the end, verifies every recorded
   output in Rucio and closes the output datasets.
4. **Register** the outputs in Rucio (dataset per step in ``outputs.scope``, replicas at the
   output RSE, a rule to ``outputs.archive``), then write status from the ledger.

Crash safety: every Job is planned in the ledger before it is created, under a name fixed at
planning, so a crash between the two is repaired by creating that Job, never a second one;
an invocation is handed to a new Job only after the ledger shows its previous attempt ended
(the pod's finalizer guarantees the attempt is recorded before the pod can go). Hence no
invocation ever has two pods running at once. Rucio rules carry the owner tag
(`steward.services.ownership`), and creating one adopts a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steward.exceptions import PermanentError, TransientError
from steward.models.campaign import (
    Campaign,
    DesiredState,
    Step,
)
from steward.observability import EXTERNAL_ACTIONS
from steward.services.audit import ResourceRef
from steward.services.campaign.base import CampaignPass
from steward.services.campaign.data import coverage
from steward.services.campaign.jobs import JobRunner
from steward.services.campaign.plan import (
    DONE,
    FAILED,
    FINAL,
    WAITING,
    Invocation,
    canonical_json,
    data_id_hash,
    dataset_name,
    effective_shard_size,
    junk_dataset_name,
)
from steward.services.campaign.record import Recorder
from steward.services.campaign.status import StatusWriter
from steward.services.site import Outcome
from steward.storage.batch import (
    LABEL_CAMPAIGN_UID,
)
from steward.storage.ledger import (
    LedgerCampaign,
    LedgerStore,
    decode_steps,
    encode_steps,
)

__all__ = ["CampaignService"]

_INSERT_CHUNK = 5000
"""Invocation rows per insert when a coverage set is enumerated: 100,000 rows built at once
cost the operator about 100 MiB."""


@dataclass(kw_only=True)
class CampaignService(Recorder, JobRunner, StatusWriter):
    """Reconciles Campaign resources: Kubernetes Jobs, Rucio rules, the ledger."""

    # -- entry points -------------------------------------------------------------------------

    def reconcile(
        self, campaign: Campaign, ref: ResourceRef, old_status: Mapping[str, Any] | None = None
    ) -> Outcome:
        """One pass over a campaign; returns its status and the Events to post.

        Raises
        ------
        TransientError
            Kubernetes or Rucio is unreachable; the pass is repeated later.
        PermanentError
            Something must change first (the Site is unknown, Rucio refuses); Degraded.
        """
        work = self._begin(campaign, ref)
        self._priority_classes(work)
        work.record = self._enumerate(work)
        self._observe(work)
        desired = campaign.spec.desired_state
        outcome = work.record.outcome
        if outcome in {"Terminated", "ClosedOut", "Deleted"}:
            self._after_end(work)
        elif desired is DesiredState.TERMINATED:
            self._terminate(work)
        else:
            work.queue = self._queue(work)
            self._controls(work)
            self._advance(work, paused=desired is DesiredState.PAUSED)
            self._register_outputs(work)
            if desired is DesiredState.CLOSED_OUT:
                self._close_out(work)
            else:
                self._release_after_success(work)
        return Outcome(self._status(work, old_status or {}), work.events)

    def finalize(self, campaign: Campaign, ref: ResourceRef) -> list[tuple[str, str, str]]:
        """The Campaign is being deleted: stop its Jobs, record every attempt, keep the ledger.

        Its outputs, if it had not finished, go to the failure review like a terminated
        campaign's. Its staging rules are released through the deletion gate as at any end;
        rules the gate keeps stay in Rucio (with the lifetime they had) and a Warning says
        why: the Campaign still goes, since keeping data never waits on anything.

        Raises
        ------
        TransientError
            Pods are still ending; the deletion waits (kopf retries) until all are recorded.
        """
        work = self._begin(campaign, ref)
        with self.sessions() as session:
            work.record = LedgerStore(session).campaign(work.uid)
        if work.record is None:
            return []
        for name in self._job_names(work):
            if self.batch.delete_job(work.namespace, name):
                EXTERNAL_ACTIONS.labels("Campaign", "delete-job").inc()
        self._observe(work)
        remaining = self._unrecorded(work, {LABEL_CAMPAIGN_UID: work.uid})
        if remaining is None:
            sites = ", ".join(sorted(work.unreachable))
            msg = f"waiting for worker sites out of reach ({sites}) to record their pods"
            raise TransientError(msg, retry_after=30)
        if remaining:
            msg = f"waiting for {remaining} pods of the campaign to end and be recorded"
            raise TransientError(msg, retry_after=5)
        self._end(work, "Deleted")
        self._release_staging(work)
        self._remove_worker_config_maps(work)
        work.events.extend(("Warning", reason, message) for reason, message in work.problems)
        return work.events

    # -- 1. enumerate -------------------------------------------------------------------------

    def _enumerate(self, work: CampaignPass) -> LedgerCampaign:
        with self.sessions() as session:
            record = LedgerStore(session).campaign(work.uid)
        if record is not None:
            self._add_steps(work, record)
            return record
        invocations = coverage(self.rucio, work.spec)
        if not invocations:
            msg = "the coverage set is empty (the query matched nothing); nothing to run yet"
            raise PermanentError(msg)
        shard_size = effective_shard_size(work.spec.shard_size, invocations)
        record = LedgerCampaign(
            uid=work.uid,
            namespace=work.namespace,
            name=work.ref.name,
            site=work.spec.site,
            output_scope=work.spec.outputs.scope,
            invocations=len(invocations),
            steps=encode_steps([(s.name, s.depends_on) for s in work.spec.steps]),
            shard_size=shard_size,
            created_at=work.now,
            staging_released=False,
        )
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            existing = store.campaign(work.uid)
            if existing is not None:
                return existing
            store.add_campaign(record)
            for step in work.spec.steps:
                self._add_step_rows(store, work, step, invocations, shard_size)
        self._audit(
            work,
            "campaign-enumerate",
            after={"invocations": len(invocations), "shardSize": shard_size},
            message=f"{len(invocations)} invocations per step, shards of {shard_size}",
        )
        return record

    def _add_step_rows(
        self,
        store: LedgerStore,
        work: CampaignPass,
        step: Step,
        invocations: Sequence[Invocation],
        shard_size: int,
    ) -> None:
        """Insert a step's invocation rows, `_INSERT_CHUNK` at a time (bounded memory)."""
        memory = step.memory_bytes()
        for start in range(0, len(invocations), _INSERT_CHUNK):
            store.add_invocations(
                [
                    {
                        "campaign_uid": work.uid,
                        "step": step.name,
                        "index": inv.index,
                        "shard": inv.index // shard_size,
                        "data_id": canonical_json(inv.data_id),
                        "data_id_hash": data_id_hash(inv.data_id),
                        "state": WAITING,
                        "memory": memory,
                        "attempts": 0,
                        "failures": 0,
                    }
                    for inv in invocations[start : start + _INSERT_CHUNK]
                ]
            )

    def _add_steps(self, work: CampaignPass, record: LedgerCampaign) -> None:
        """Give steps added to the spec after the start their ledger rows."""
        known = decode_steps(record.steps)
        names = {name for name, _ in known}
        added = [s for s in work.spec.steps if s.name not in names]
        if not added:
            return
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            data_ids = store.step_data_ids(work.uid, known[0][0])
            invocations = [
                Invocation(index, json.loads(text)) for index, text in sorted(data_ids.items())
            ]
            for step in added:
                self._add_step_rows(store, work, step, invocations, record.shard_size)
            row = store.campaign(work.uid)
            assert row is not None  # noqa: S101 - read above
            row.steps = encode_steps([*known, *((s.name, s.depends_on) for s in added)])
            record.steps = row.steps
        listed = ", ".join(s.name for s in added)
        self._audit(work, "campaign-add-steps", message=f"steps added: {listed}")

    def _terminate(self, work: CampaignPass) -> None:
        """Delete the running work, keep the ledger, hold the outputs for review."""
        for name in self._job_names(work):
            if name in work.live and self.batch.delete_job(work.namespace, name):
                EXTERNAL_ACTIONS.labels("Campaign", "delete-job").inc()
        self._end(work, "Terminated")
        self._after_end(work)

    def _end(self, work: CampaignPass, outcome: str) -> None:
        """Record how the campaign ended (once); unfinished invocations are cancelled."""
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            record = store.campaign(work.uid)
            if record is None or record.outcome is not None:
                return
            store.cancel_unfinished(work.uid)
            counts = store.state_counts(work.uid)
            complete = all(set(states) <= DONE for states in counts.values())
            record.outcome = outcome
            record.finished_at = work.now
            if outcome != "ClosedOut" and not complete:
                record.review = "pending"
            outputs = store.file_count(work.uid, role="output")
            work.record = record
        held = f"; {outputs} outputs held for the failure review" if record.review else ""
        self._audit(
            work,
            f"campaign-{outcome.lower()}",
            after={"outputs": outputs, "review": record.review},
            message=f"campaign {outcome.lower()}{held}",
        )
        work.events.append(
            ("Warning" if record.review else "Normal", f"Campaign{outcome}", f"{outcome}{held}")
        )

    def _after_end(self, work: CampaignPass) -> None:
        """After the end: record the last pods, register their outputs, release staging."""
        remaining = self._unrecorded(work, {LABEL_CAMPAIGN_UID: work.uid})
        work.unrecorded = remaining or 0
        if remaining:
            work.waiting.append(f"{remaining} pods still ending")
        self._register_outputs(work)
        self._release_staging(work)
        self._remove_worker_config_maps(work)

    def _close_out(self, work: CampaignPass) -> None:
        """Once every step finished: verify the outputs in Rucio, close the datasets, clean up.

        Failed invocations block it first, even while other steps still run: the steps that
        depend on a failed one cannot finish until the failures are retried or accepted.
        """
        with self.sessions() as session:
            store = LedgerStore(session)
            counts = store.state_counts(work.uid)
            unregistered = store.file_count(work.uid, role="output", registered=False)
            if work.spec.outputs.keep_junk:
                unregistered += store.file_count(work.uid, role="junk", registered=False)
            junk_steps = set(store.file_counts(work.uid, role="junk"))
            outputs = store.files(work.uid, role="output")
        failed = {step: c.get(FAILED, 0) for step, c in counts.items() if c.get(FAILED)}
        if failed:
            detail = ", ".join(f"{step}: {n}" for step, n in sorted(failed.items()))
            work.problems.append(
                (
                    "CloseoutBlocked",
                    f"failed invocations ({detail}): retry, accept or terminate before closeout",
                )
            )
            return
        unfinished = sum(n for c in counts.values() for s, n in c.items() if s not in FINAL)
        if unfinished:
            work.waiting.append(f"closeout waits for {unfinished} invocations to finish")
            return
        if unregistered:
            work.waiting.append(f"closeout waits for {unregistered} outputs to be registered")
            return
        missing = self._missing_outputs(work, outputs)
        if missing:
            message = (
                f"{len(missing)} expected outputs are not available in Rucio "
                f"(first: {', '.join(sorted(missing)[:3])})"
            )
            work.problems.append(("OutputsMissing", message))
            return
        names = [dataset_name(work.ref.name, step, work.uid) for step in {r.step for r in outputs}]
        if work.spec.outputs.keep_junk:
            names += [junk_dataset_name(work.ref.name, step, work.uid) for step in junk_steps]
        self._close_datasets(work, names)
        self._release_staging(work)
        for name in self._job_names(work):
            if name in work.live:
                self.batch.delete_job(work.namespace, name)
        self._remove_worker_config_maps(work)
        self._end(work, "ClosedOut")

    def _close_datasets(self, work: CampaignPass, names: Sequence[str]) -> None:
        """Close the step datasets (outputs, and junk kept by ``keepJunk``) in Rucio."""
        for name in sorted(names):
            dataset = f"{work.spec.outputs.scope}:{name}"
            if self.rucio.close_collection(dataset):
                EXTERNAL_ACTIONS.labels("Campaign", "close-dataset").inc()
                self._audit(work, "close-dataset", target=dataset)
