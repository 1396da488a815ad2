"""Running the DAG: shard Jobs per step, reruns as rescue Jobs, the operator's controls."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from steward.exceptions import TransientError
from steward.models.campaign import (
    Step,
    StepPhase,
    format_indexes,
    format_memory,
    parse_indexes,
)
from steward.observability import EXTERNAL_ACTIONS
from steward.services.attempts import (
    CONTAINER,
    pod_failure_policy,
)
from steward.services.audit import AuditRecord
from steward.services.campaign.base import MOUNT_PATH, CampaignPass
from steward.services.campaign.data import RucioSide
from steward.services.campaign.plan import (
    ACCEPTED,
    DONE,
    FAILED,
    FINAL,
    QUEUED,
    Invocation,
    config_map_entry,
    group_rescues,
    job_name,
    retry_decision,
    shard_ranges,
    topological,
)
from steward.services.campaign.queueing import QueueSide
from steward.services.queueing import STAGING_ANNOTATION
from steward.storage.batch import (
    LABEL_CAMPAIGN,
    LABEL_CAMPAIGN_UID,
    LABEL_JOB,
    LABEL_JOB_KIND,
    LABEL_SHARD,
    LABEL_STEP,
    JobSpec,
    Owner,
    priority_class_name,
)
from steward.storage.ledger import (
    LedgerControl,
    LedgerInvocation,
    LedgerJob,
    LedgerStore,
)

__all__ = ["JobRunner"]


class JobRunner(RucioSide, QueueSide):
    """Starts steps, creates and steers their Jobs, reruns what failed."""

    # -- 3a. controls -------------------------------------------------------------------------

    def _controls(self, work: CampaignPass) -> None:
        """Act once on each new retry, rescue and accept request (audited, in status)."""
        controls = work.spec.controls
        if not (controls.retry or controls.rescue or controls.accept):
            return
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            handled = {(c.type, c.step, c.request_id) for c in store.controls(work.uid)}
            started = {job.step for job in store.jobs(work.uid)}
            for request in controls.retry:
                if ("retry", request.step, request.id) in handled:
                    continue
                rows = store.invocations(work.uid, request.step, states=[FAILED])
                self._rerun(store, work, request.step, rows, "retry", reset=True)
                self._control(
                    store,
                    work,
                    kind="retry",
                    step=request.step,
                    request_id=request.id,
                    rows=rows,
                    reason=request.reason,
                )
            for request in controls.rescue:
                if ("rescue", request.step, request.id) in handled:
                    continue
                # Lost Jobs are rescued without asking (`_handle_failures`); what is missing
                # on request is what failed, including failures accepted before.
                rows = []
                if request.step in started:
                    rows = store.invocations(work.uid, request.step, states=[FAILED, ACCEPTED])
                self._rerun(store, work, request.step, rows, "rescue", reset=True)
                self._control(
                    store,
                    work,
                    kind="rescue",
                    step=request.step,
                    request_id=request.id,
                    rows=rows,
                    reason=request.reason,
                )
            for accept in controls.accept:
                if ("accept", accept.step, "") in handled:
                    continue
                self._accept(store, work, accept.step, accept.max_failures, accept.reason)
        self.audit.record_many(work.audits)
        work.audits.clear()

    def _accept(
        self, store: LedgerStore, work: CampaignPass, step: str, max_failures: int, reason: str
    ) -> None:
        rows = store.invocations(work.uid, step)
        if not rows or any(row.state not in FINAL for row in rows):
            work.waiting.append(f"accept of step {step} waits for the step to finish")
            return
        failed = [row for row in rows if row.state == FAILED]
        if not failed:
            return
        if len(failed) > max_failures:
            message = (
                f"step {step}: {len(failed)} invocations failed, more than the "
                f"{max_failures} controls.accept allows"
            )
            work.problems.append(("AcceptRefused", message))
            return
        for row in failed:
            row.state = ACCEPTED
        self._control(
            store, work, kind="accept", step=step, request_id="", rows=failed, reason=reason
        )

    def _control(
        self,
        store: LedgerStore,
        work: CampaignPass,
        *,
        kind: str,
        step: str,
        request_id: str,
        rows: Sequence[LedgerInvocation],
        reason: str,
    ) -> None:
        indexes = format_indexes(row.index for row in rows)
        store.add_control(
            LedgerControl(
                campaign_uid=work.uid,
                type=kind,
                step=step,
                request_id=request_id,
                invocations=indexes,
                time=work.now,
            )
        )
        work.audits.append(
            AuditRecord(
                resource=work.ref,
                action=f"campaign-{kind}",
                actor=self.actor,
                target=step,
                after={"id": request_id, "invocations": indexes, "count": len(rows)},
                message=reason,
            )
        )
        which = f" ({indexes})" if indexes else ""
        message = f"{kind} of step {step}: {len(rows)} invocations{which}"
        work.events.append(("Normal", f"Control{kind.capitalize()}", message))

    # -- 3b. advance the DAG ------------------------------------------------------------------

    def _advance(self, work: CampaignPass, *, paused: bool) -> None:
        with self.sessions() as session:
            store = LedgerStore(session)
            counts = store.state_counts(work.uid)
            planned = store.jobs(work.uid)
        assert work.record is not None  # noqa: S101 - enumerated first
        total = work.record.invocations
        for step in topological(work.spec.steps):
            step_jobs = [job for job in planned if job.step == step.name]
            if not step_jobs:
                gate = self._gate(work, step, counts, total)
                if gate is not None:
                    work.gates[step.name] = gate
                    continue
                if paused:
                    continue
                self._start(work, step)
            self._handle_failures(work, step)
            self._ensure_jobs(work, step, paused=paused)

    def _gate(
        self, work: CampaignPass, step: Step, counts: Mapping[str, Mapping[str, int]], total: int
    ) -> StepPhase | None:
        """Why a step may not start yet, or None if it may."""
        for dep in step.depends_on:
            done = sum(counts.get(dep, {}).get(state, 0) for state in DONE)
            if done < total:
                return StepPhase.WAITING
        if not step.depends_on and not self._staged(work):
            return StepPhase.STAGING
        if step.breakpoint and step.name not in work.spec.controls.approve:
            work.waiting.append(f"step {step.name} waits for approval (controls.approve)")
            return StepPhase.AWAITING_APPROVAL
        return None

    def _start(self, work: CampaignPass, step: Step) -> None:
        """Plan the step's shard Jobs in the ledger (created right after, in `_ensure_jobs`)."""
        assert work.record is not None  # noqa: S101
        shards = shard_ranges(work.record.invocations, work.record.shard_size)
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            if any(job.step == step.name for job in store.jobs(work.uid)):
                return
            for number, indexes in enumerate(shards):
                name = job_name(work.ref.name, step.name, str(number))
                store.add_job(
                    LedgerJob(
                        campaign_uid=work.uid,
                        name=name,
                        step=step.name,
                        kind="shard",
                        shard=number,
                        invocations=format_indexes(indexes),
                        memory=step.memory_bytes(),
                        retries=step.retries,
                        reason="start",
                        created=False,
                        planned_at=work.now,
                    )
                )
                store.assign_range(work.uid, step.name, indexes, name)
            if step.breakpoint:
                store.add_control(
                    LedgerControl(
                        campaign_uid=work.uid,
                        type="approve",
                        step=step.name,
                        request_id="",
                        invocations="",
                        time=work.now,
                    )
                )
        if step.breakpoint:
            self._audit(work, "campaign-approve", target=step.name, message="breakpoint approved")
        self._audit(
            work,
            "campaign-start-step",
            target=step.name,
            after={"shards": len(shards), "invocations": work.record.invocations},
        )
        work.events.append(
            (
                "Normal",
                "StepStarted",
                f"step {step.name}: {work.record.invocations} invocations in {len(shards)} Jobs",
            )
        )

    def _ensure_jobs(self, work: CampaignPass, step: Step, *, paused: bool) -> None:
        """Create the step's planned Jobs; keep suspend and parallelism as the spec says."""
        with self.sessions() as session:
            planned = [j for j in LedgerStore(session).jobs(work.uid) if j.step == step.name]
        pending = [job for job in planned if not job.created]
        missing = [job for job in pending if job.name not in work.live]
        # The intent of every creation is audited first, in one transaction, and the Jobs are
        # marked created in one more: a step of twenty shards costs two writes, not forty.
        self.audit.record_many([self._creation_record(work, step, job) for job in missing])
        for job in missing:
            self._create_job(work, step, job, paused=paused)
        if pending:
            with self.sessions.begin() as session:
                store = LedgerStore(session)
                for job in pending:
                    store.mark_job_created(work.uid, job.name)
        for job in planned:
            live = work.live.get(job.name)
            if not job.created or live is None or _finished(live):
                continue
            self._worker_config_maps(work, step, job)
            spec = live.get("spec") or {}
            queued = self._queue_pause(work, job.name, paused=paused)
            if not queued and bool(spec.get("suspend")) != paused:
                self.batch.set_suspend(work.namespace, job.name, suspend=paused)
                EXTERNAL_ACTIONS.labels("Campaign", "suspend" if paused else "resume").inc()
            wanted = min(step.parallelism, int(spec.get("completions") or 1))
            if spec.get("parallelism") != wanted:
                self.batch.set_parallelism(work.namespace, job.name, wanted)

    def _creation_record(self, work: CampaignPass, step: Step, job: LedgerJob) -> AuditRecord:
        return AuditRecord(
            resource=work.ref,
            action="create-job",
            actor=self.actor,
            target=job.name,
            after={
                "step": step.name,
                "kind": job.kind,
                "invocations": job.invocations,
                "memory": format_memory(job.memory),
                "retries": job.retries,
            },
            message=job.reason,
        )

    def _create_job(self, work: CampaignPass, step: Step, job: LedgerJob, *, paused: bool) -> None:
        indexes = parse_indexes(job.invocations)
        config_map = self._config_map(work, step, job, indexes)
        labels = {
            LABEL_CAMPAIGN: work.ref.name,
            LABEL_CAMPAIGN_UID: work.uid,
            LABEL_STEP: step.name,
            LABEL_SHARD: str(job.shard) if job.shard is not None else "rescue",
            LABEL_JOB: job.name,
            LABEL_JOB_KIND: job.kind,
            **self._queue_labels(work),
        }
        spec = JobSpec(
            name=job.name,
            namespace=work.namespace,
            owner=self._owner(work),
            labels=labels,
            invocations=job.invocations,
            completions=len(indexes),
            parallelism=min(step.parallelism, len(indexes)),
            retries=job.retries,
            pod_failure_policy=pod_failure_policy(step.never_retry_exit_codes),
            suspend=paused,
            priority_class=priority_class_name(work.spec.priority),
            container=CONTAINER,
            image=work.spec.image,
            args=step.args,
            env={
                **work.spec.config,
                "STEWARD_CAMPAIGN": work.ref.name,
                "STEWARD_STEP": step.name,
                "STEWARD_PIPELINE": step.pipeline,
                "STEWARD_INVOCATIONS": MOUNT_PATH,
                "STEWARD_OUTPUT_SCOPE": work.spec.outputs.scope,
            },
            cpu=step.resources.cpu,
            memory=format_memory(job.memory),
            config_map=config_map,
            mount_path=MOUNT_PATH,
            node_selector=work.spec.node_selector,
            tolerations=[t.model_dump(exclude_none=True) for t in work.spec.tolerations],
            pod_annotations={
                **step.pod_annotations,
                **self._staging_annotation(work, step, job, indexes),
            },
        )
        if self.batch.create_job(spec):
            EXTERNAL_ACTIONS.labels("Campaign", "create-job").inc()

    def _staging_annotation(
        self, work: CampaignPass, step: Step, job: LedgerJob, indexes: list[int]
    ) -> dict[str, str]:
        """The pod annotation naming the dataset of a first step's Job's inputs (multi-site).

        On the pod template, because that is what reaches a worker before it admits: Kueue
        copies the template into the Workload's ``podSets``, and MultiKueue copies that
        Workload (not the Job, which it sends only to the worker that admitted) to every
        worker it offers the Job to. Later steps read what earlier ones wrote at the site
        that ran them; only a first step's Jobs read staged inputs.
        """
        if step.depends_on or not self._staged_per_shard(work):
            return {}
        dataset = self._shard_inputs(work, step.name, job.name, indexes)
        return {STAGING_ANNOTATION: dataset} if dataset else {}

    def _config_map(
        self, work: CampaignPass, step: Step, job: LedgerJob, indexes: list[int]
    ) -> str:
        """The ConfigMap mapping the Job's completion indexes to data ids (created if missing).

        A shard's ConfigMap is shared by every step (same invocations, same completion
        indexes); a rescue Job gets its own.
        """
        name = _config_map_name(work, step, job)
        if name in work.config_maps or self.batch.config_map_exists(work.namespace, name):
            work.config_maps.add(name)
            return name
        with self.sessions() as session:
            data_ids = LedgerStore(session).data_ids(work.uid, step.name, indexes)
        data = {
            str(completion): config_map_entry(Invocation(index, json.loads(data_ids[index])))
            for completion, index in enumerate(indexes)
        }
        labels = {LABEL_CAMPAIGN: work.ref.name, LABEL_CAMPAIGN_UID: work.uid}
        if self.batch.create_config_map(
            work.namespace, name, data, owner=self._owner(work), labels=labels
        ):
            EXTERNAL_ACTIONS.labels("Campaign", "create-configmap").inc()
        work.config_maps.add(name)
        return name

    def _copy_config_map(self, work: CampaignPass, site: str, name: str, job: str) -> None:
        """Give worker SITE a copy of the campaign's ConfigMap NAME, owned there by JOB's copy.

        MultiKueue copies a Job to the worker that admits it, not the ConfigMap its pods
        mount, and a pod waits for a missing ConfigMap volume. The Campaign is not in that
        cluster, so the copy is owned by the worker's copies of the Jobs that mount it (a
        shard's, one reference per step that ran there): the worker's garbage collector
        deletes it once the last is gone, and MultiKueue deletes its copy of a Job when the
        Job finishes or is dispatched elsewhere, and, when a worker it had lost is back, every
        copy whose Job is gone at the manager (Kueue v0.19.2,
        ``pkg/controller/admissionchecks/multikueue/multikueuecluster.go`` runGC). So a copy
        never outlives its Jobs, even at a worker that was out of reach while the campaign
        ended or was deleted; `_remove_worker_config_maps` deletes them at the end as well.
        A worker out of reach, or MultiKueue's copy of JOB not made yet, gets it on a later
        pass; a pod that starts before waits for it.
        """
        batch = dict(self._workers(work)).get(site)
        done = f"{site}/{name}/{job}"
        if batch is None or done in work.config_maps:
            return
        try:
            copy = batch.get_job(work.namespace, job)
            labels = (copy or {}).get("metadata", {}).get("labels") or {}
            if copy is None or labels.get(LABEL_CAMPAIGN_UID) != work.uid:
                return  # not made yet (or not this campaign's: never adopt it)
            owner = Owner("batch/v1", "Job", job, copy["metadata"]["uid"], controller=False)
            owners = batch.config_map_owners(work.namespace, name)
            if owners is None:
                data = self.batch.config_map_data(work.namespace, name)
                if data is None:
                    return
                labels = {LABEL_CAMPAIGN: work.ref.name, LABEL_CAMPAIGN_UID: work.uid}
                if batch.create_config_map(work.namespace, name, data, owner=owner, labels=labels):
                    EXTERNAL_ACTIONS.labels("Campaign", "copy-configmap").inc()
                    owners = {owner.uid}
            if owner.uid not in (owners or set()):
                if not batch.add_config_map_owner(work.namespace, name, owner):
                    return  # deleted meanwhile with its last owner: made again next pass
                EXTERNAL_ACTIONS.labels("Campaign", "own-configmap-copy").inc()
        except TransientError as error:
            work.unreachable[site] = str(error)
            return
        work.config_maps.add(done)

    def _worker_config_maps(self, work: CampaignPass, step: Step, job: LedgerJob) -> None:
        """Copy JOB's ConfigMap to the worker Kueue admitted it at.

        Once MultiKueue made its copy of the Job there; checked on every pass, which repairs
        a worker that was out of reach.
        """
        if not work.spec.sites:
            return
        found = self._workloads(work).get(job.name)
        admitted = found[1].cluster if found is not None else None
        if admitted:
            self._copy_config_map(work, admitted, _config_map_name(work, step, job), job.name)

    def _remove_worker_config_maps(self, work: CampaignPass) -> None:
        """Delete the copies of the campaign's ConfigMaps at the worker sites (it has ended)."""
        for site, batch in self._workers(work):
            try:
                batch.delete_config_maps(work.namespace, {LABEL_CAMPAIGN_UID: work.uid})
            except TransientError as error:
                work.unreachable[site] = str(error)

    def _handle_failures(self, work: CampaignPass, step: Step) -> None:
        """Rerun, or fail for good, each invocation a Job gave up on (or lost with the Job)."""
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            planned = [j for j in store.jobs(work.uid) if j.step == step.name and j.created]
            reruns: list[tuple[LedgerInvocation, int, str]] = []
            for job in planned:
                live = work.live.get(job.name)
                if live is None:
                    rows = store.invocations(work.uid, step.name, job=job.name, states=[QUEUED])
                    if (
                        rows
                        and self._unrecorded(
                            work, {LABEL_CAMPAIGN_UID: work.uid, LABEL_JOB: job.name}
                        )
                        == 0
                    ):
                        reruns.extend((row, row.memory, "Job lost") for row in rows)
                    continue
                failed = parse_indexes((live.get("status") or {}).get("failedIndexes"))
                if not failed:
                    continue
                mapping = parse_indexes(job.invocations)
                wanted = [mapping[c] for c in failed if c < len(mapping)]
                rows = store.invocations(
                    work.uid, step.name, indexes=wanted, job=job.name, states=[QUEUED]
                )
                for row in rows:
                    if row.last_job != job.name:
                        continue  # its ending attempt is not recorded yet
                    decision = retry_decision(
                        step,
                        last_class=row.last_class,
                        exit_code=row.exit_code,
                        failures=row.failures,
                        memory=row.memory,
                    )
                    if decision.rerun:
                        reruns.append((row, decision.memory, decision.reason))
                    else:
                        row.state = FAILED
                        work.events.append(
                            (
                                "Warning",
                                "InvocationFailed",
                                f"step {step.name} invocation {row.index}: {decision.reason}",
                            )
                        )
            if reruns:
                self._plan_rescues(store, work, step, reruns)

    def _rerun(
        self,
        store: LedgerStore,
        work: CampaignPass,
        step_name: str,
        rows: Sequence[LedgerInvocation],
        reason: str,
        *,
        reset: bool,
    ) -> None:
        step = work.step(step_name)
        if step is None or not rows:
            return
        if reset:
            for row in rows:
                row.failures = 0
        self._plan_rescues(store, work, step, [(row, row.memory, reason) for row in rows])

    def _plan_rescues(
        self,
        store: LedgerStore,
        work: CampaignPass,
        step: Step,
        reruns: Sequence[tuple[LedgerInvocation, int, str]],
    ) -> None:
        """Plan one rescue Job per memory size and remaining budget over exactly ``reruns``."""
        rows = {row.index: row for row, _, _ in reruns}
        reasons = Counter(reason for _, _, reason in reruns)
        groups = group_rescues(
            (row.index, memory, max(0, step.retries - row.failures)) for row, memory, _ in reruns
        )
        number = sum(1 for j in store.jobs(work.uid) if j.step == step.name and j.kind == "rescue")
        summary = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        for (memory, remaining), indexes in sorted(groups.items()):
            number += 1
            name = job_name(work.ref.name, step.name, f"r{number}")
            store.add_job(
                LedgerJob(
                    campaign_uid=work.uid,
                    name=name,
                    step=step.name,
                    kind="rescue",
                    shard=None,
                    invocations=format_indexes(indexes),
                    memory=memory,
                    retries=remaining,
                    reason=summary[:128],
                    created=False,
                    planned_at=work.now,
                )
            )
            for index in indexes:
                row = rows[index]
                row.state, row.job, row.memory = QUEUED, name, memory
            message = (
                f"step {step.name}: rerun {len(indexes)} invocations "
                f"({format_indexes(indexes)}) with {format_memory(memory)} in {name}: {summary}"
            )
            work.events.append(("Normal", "RescueJob", message))


def _finished(job: Mapping[str, Any]) -> bool:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") in {"Complete", "Failed"} and item.get("status") == "True":
            return True
    return False


def _config_map_name(work: CampaignPass, step: Step, job: LedgerJob) -> str:
    """The ConfigMap of JOB's data ids: a shard's is shared by every step, a rescue has its own."""
    suffix = f"s{job.shard}" if job.kind == "shard" else job.name.rsplit("-", 1)[-1]
    base = job_name(work.ref.name, step.name if job.kind != "shard" else "data", suffix)
    return f"{base}-{work.uid[:6]}"
