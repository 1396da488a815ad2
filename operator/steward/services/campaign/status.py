"""A campaign's status from the ledger: phases, counts, conditions, Events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from steward.models.campaign import (
    CampaignPhase,
    DesiredState,
    StepPhase,
    parse_indexes,
)
from steward.observability import CAMPAIGN_INVOCATIONS
from steward.services.attempts import (
    AttemptClass,
)
from steward.services.campaign.base import CampaignPass, iso
from steward.services.campaign.plan import (
    ACCEPTED,
    FAILED,
    FINAL,
    SUCCEEDED,
    blocked,
    step_phase,
)
from steward.services.campaign.queueing import QueueSide
from steward.services.conditions import DEGRADED, PROGRESSING, READY, condition, set_condition
from steward.storage.ledger import (
    LedgerJob,
    LedgerStore,
)

__all__ = ["StatusWriter"]


class StatusWriter(QueueSide):
    """Computes status and the Events of transitions."""

    # -- 4. status ----------------------------------------------------------------------------

    def _status(self, work: CampaignPass, old: Mapping[str, Any]) -> dict[str, Any]:
        record = work.record
        assert record is not None  # noqa: S101
        with self.sessions() as session:
            store = LedgerStore(session)
            counts = store.state_counts(work.uid)
            attempts = store.attempt_counts(work.uid)
            planned = store.jobs(work.uid)
            controls = store.controls(work.uid)
            outputs = store.file_count(work.uid, role="output", registered=True)
            sites = store.site_counts(work.uid, SUCCEEDED) if work.spec.sites else {}
            junk = store.file_counts(work.uid, role="junk")
        evicted: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for step_name, klass, exit_code, count in attempts:
            if klass == AttemptClass.EVICTED.value:
                evicted[step_name] += count
            if klass == AttemptClass.EXIT_CODE.value:
                failures[f"ExitCode {exit_code}"] += count
            elif klass != AttemptClass.SUCCEEDED.value:
                failures[klass] += count
        steps, phases = self._steps(work, old, counts, planned, evicted, junk=junk, sites=sites)
        for state in ("pending", "running", "succeeded", "failed"):
            CAMPAIGN_INVOCATIONS.labels(work.namespace, work.ref.name, state).set(
                sum(step.get(state, 0) for step in steps)
            )
        phase = self._phase(work, phases)
        done = sum(
            counts.get(s.name, {}).get(SUCCEEDED, 0) + counts.get(s.name, {}).get(ACCEPTED, 0)
            for s in work.spec.steps
        )
        final = phase in {
            CampaignPhase.SUCCEEDED,
            CampaignPhase.FAILED,
            CampaignPhase.TERMINATED,
            CampaignPhase.CLOSED_OUT,
        }
        status: dict[str, Any] = {
            "observedGeneration": work.ref.generation,
            "phase": phase.value,
            "invocations": record.invocations,
            "progress": f"{done}/{record.invocations * len(work.spec.steps)}",
            "steps": steps,
            "failures": dict(sorted(failures.items())),
            "outputs": outputs,
            "junk": sum(junk.values()),
            "controls": [
                {
                    "type": c.type,
                    "step": c.step,
                    "id": c.request_id,
                    "invocations": len(parse_indexes(c.invocations)),
                    "time": iso(c.time),
                }
                for c in controls
            ],
            "review": "Pending" if record.review == "pending" else "",
            "startTime": iso(min((j.planned_at for j in planned), default=None)),
            "endTime": (old.get("endTime") or iso(work.now)) if final else None,
        }
        queueing = self._queue_status(work)
        if queueing is not None:
            status["queueing"] = queueing
        staging = work.staging or old.get("staging")
        if staging:
            kept = {key: value for key, value in staging.items() if key != "releaseAt"}
            status["staging"] = {**kept, "released": record.staging_released}
            if record.succeeded_at is not None and not record.staging_released:
                release_at = record.succeeded_at + work.spec.inputs.release_after
                status["staging"]["releaseAt"] = iso(release_at)
        if old.get("phase") != phase.value and final:
            kind = "Warning" if phase is CampaignPhase.FAILED else "Normal"
            work.events.append((kind, f"Campaign{phase.value}", f"campaign {phase.value}"))
        status["conditions"] = self._conditions(work, phase, phases, old, counts)
        return status

    def _steps(
        self,
        work: CampaignPass,
        old: Mapping[str, Any],
        counts: Mapping[str, Mapping[str, int]],
        planned: Sequence[LedgerJob],
        evicted: Mapping[str, int],
        *,
        junk: Mapping[str, int],
        sites: Mapping[str, Mapping[str, int]],
    ) -> tuple[list[dict[str, Any]], dict[str, StepPhase]]:
        """Each step's counts and phase; an Event for each phase that changed.

        A multi-site campaign's steps also count their succeeded invocations by the site that
        ran them (from the ledger, so the count outlives Kueue's Workloads).
        """
        assert work.record is not None  # noqa: S101
        total = work.record.invocations
        paused = work.spec.desired_state is DesiredState.PAUSED
        old_steps = {s.get("name"): s for s in old.get("steps") or []}
        phases: dict[str, StepPhase] = {}
        steps = []
        for step in work.spec.steps:
            step_counts = counts.get(step.name, {})
            step_jobs = [job for job in planned if job.step == step.name]
            done = sum(step_counts.get(s, 0) for s in FINAL)
            active = sum(
                int(((work.live.get(j.name) or {}).get("status") or {}).get("active") or 0)
                for j in step_jobs
            )
            running = min(active, total - done)
            phase = step_phase(
                total,
                step_counts,
                started=bool(step_jobs),
                gate=work.gates.get(step.name),
                paused=paused,
            )
            phases[step.name] = phase
            previous = old_steps.get(step.name) or {}
            final = phase in {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.CANCELLED}
            entry = {
                "name": step.name,
                "phase": phase.value,
                "pending": max(0, total - done - running),
                "running": running,
                "succeeded": step_counts.get(SUCCEEDED, 0),
                "failed": step_counts.get(FAILED, 0),
                "accepted": step_counts.get(ACCEPTED, 0),
                "evicted": evicted.get(step.name, 0),
                "junk": junk.get(step.name, 0),
                "jobs": len(step_jobs),
                "sites": dict(sorted(sites[step.name].items())) if step.name in sites else None,
                "startTime": iso(min((j.planned_at for j in step_jobs), default=None)),
                "endTime": (previous.get("endTime") or iso(work.now)) if final else None,
            }
            # The API server drops null fields inside list items; leaving them out keeps the
            # stored status equal to this one, so an unchanged status is not patched again.
            steps.append({key: value for key, value in entry.items() if value is not None})
            if previous.get("phase") != phase.value:
                kind = "Warning" if phase is StepPhase.FAILED else "Normal"
                work.events.append((kind, f"Step{phase.value}", f"step {step.name}: {phase.value}"))
        return steps, phases

    def _phase(self, work: CampaignPass, phases: Mapping[str, StepPhase]) -> CampaignPhase:  # noqa: PLR0911 - a decision list: the first phase that applies
        record = work.record
        assert record is not None  # noqa: S101
        if record.outcome == "Terminated":
            return CampaignPhase.TERMINATED
        if record.outcome == "ClosedOut":
            return CampaignPhase.CLOSED_OUT
        values = set(phases.values())
        if values == {StepPhase.SUCCEEDED}:
            return CampaignPhase.SUCCEEDED
        if work.spec.desired_state is DesiredState.PAUSED:
            return CampaignPhase.PAUSED
        if StepPhase.RUNNING in values:
            return CampaignPhase.RUNNING
        if StepPhase.STAGING in values:
            return CampaignPhase.STAGING
        stuck = blocked(work.spec, phases)
        open_steps = {
            name
            for name, phase in phases.items()
            if phase in {StepPhase.WAITING, StepPhase.AWAITING_APPROVAL} and name not in stuck
        }
        if StepPhase.FAILED in values and not open_steps:
            return CampaignPhase.FAILED
        return CampaignPhase.RUNNING

    def _conditions(
        self,
        work: CampaignPass,
        phase: CampaignPhase,
        phases: Mapping[str, StepPhase],
        old: Mapping[str, Any],
        counts: Mapping[str, Mapping[str, int]],
    ) -> list[dict[str, Any]]:
        generation, now = work.ref.generation, work.now
        settled = {
            CampaignPhase.SUCCEEDED,
            CampaignPhase.CLOSED_OUT,
            CampaignPhase.TERMINATED,
            CampaignPhase.PAUSED,
        }
        ready = phase in settled and not work.waiting
        if phase is CampaignPhase.TERMINATED and work.unrecorded:
            ready = False
        running = [name for name, p in phases.items() if p is StepPhase.RUNNING]
        progress_message = "; ".join(
            [f"steps running: {', '.join(running)}"] * bool(running) + work.waiting
        )
        conditions = set_condition(
            old.get("conditions"),
            condition(
                READY,
                status=ready,
                reason=phase.value,
                message=progress_message if not ready else f"campaign {phase.value}",
                generation=generation,
                now=now,
            ),
        )
        progressing = phase in {
            CampaignPhase.PENDING,
            CampaignPhase.STAGING,
            CampaignPhase.RUNNING,
        } or bool(work.waiting)
        conditions = set_condition(
            conditions,
            condition(
                PROGRESSING,
                status=progressing,
                reason="Working" if progressing else phase.value,
                message=progress_message,
                generation=generation,
                now=now,
            ),
        )
        failed = sum(c.get(FAILED, 0) for c in counts.values())
        problems = list(work.problems)
        if failed:
            problems.append(("InvocationsFailed", f"{failed} invocations failed for good"))
        return set_condition(
            conditions,
            condition(
                DEGRADED,
                status=bool(problems),
                reason=problems[0][0] if problems else "AsExpected",
                message="; ".join(message for _, message in problems),
                generation=generation,
                now=now,
            ),
        )
