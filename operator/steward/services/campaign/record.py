"""Recording attempts: ended pods into the ledger, classified, with their files.

The pods are read where they ran: in this cluster, and for a multi-site campaign also at each
worker site MultiKueue may have sent its Jobs to (`CampaignBase._workers`), and each attempt
records its site. Kueue's MultiKueue creates the copy of a Job at the worker with the same
pod template, so the worker's pods carry the campaign's labels and Steward's ledger
finalizer: they stay at the worker (even after MultiKueue deletes the finished copy) until
this cluster's Steward has recorded them and dropped the finalizer there. An operator
restart or a worker out of reach only delays the recording.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from steward.exceptions import TransientError
from steward.models.campaign import (
    Step,
    index_at,
    output_placeholders,
    parse_memory,
)
from steward.services.attempts import (
    AttemptClass,
    Verdict,
    classify,
    reported_outputs,
)
from steward.services.campaign.base import COMPLETION_INDEX, LOG, CampaignBase, CampaignPass
from steward.services.campaign.plan import (
    FAILED,
    SUCCEEDED,
    OutputSort,
    sort_outputs,
)
from steward.storage.batch import (
    LABEL_CAMPAIGN_UID,
    LABEL_JOB,
    LABEL_STEP,
    BatchStorage,
)
from steward.storage.ledger import (
    LedgerStore,
)

__all__ = ["Recorder"]


@dataclass
class _Attempt:
    """One ended pod, parsed."""

    pod_uid: str
    pod: str
    step: str
    job: str
    index: int
    site: str
    verdict: Verdict
    outputs: list[tuple[str, int, str]]
    junk: frozenset[str] = frozenset()
    """Reported files its step did not expect (`sort_outputs`)."""


class Recorder(CampaignBase):
    """Observes ended pods and records them."""

    # -- 2. observe ---------------------------------------------------------------------------

    def _observe(self, work: CampaignPass) -> None:
        """Record every ended pod not recorded yet, here and at the worker sites; let them go.

        A worker site out of reach is skipped (and named in the Progressing condition): its
        pods wait for the next pass behind their finalizer.
        """
        work.live = {
            job["metadata"]["name"]: job
            for job in self.batch.list_jobs(work.namespace, {LABEL_CAMPAIGN_UID: work.uid})
        }
        self._record_pods(work, self.batch, work.spec.site)
        for site, batch in self._workers(work):
            try:
                self._record_pods(work, batch, site)
            except TransientError as error:
                work.unreachable[site] = str(error)
        for site, reason in sorted(work.unreachable.items()):
            work.waiting.append(f"site {site} out of reach, its attempts not recorded: {reason}")

    def _record_pods(self, work: CampaignPass, batch: BatchStorage, site: str) -> None:
        """Record the ended pods of the campaign in BATCH's cluster, which is SITE's."""
        pods = batch.ended_pods(work.namespace, {LABEL_CAMPAIGN_UID: work.uid})
        if not pods:
            return
        parsed = [a for pod in pods if (a := self._parse(pod, site)) is not None]
        with self.sessions.begin() as session:
            store = LedgerStore(session)
            known = store.known_pods([a.pod_uid for a in parsed])
            new = [a for a in parsed if a.pod_uid not in known]
            if new:
                self._record_attempts(store, work, new)
        batch.mark_recorded(pods)

    def _parse(self, pod: Mapping[str, Any], site: str) -> _Attempt | None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        try:
            completion = int(annotations[COMPLETION_INDEX])
            index = index_at(annotations["steward.lsst.io/invocations"], completion)
            step, job = labels[LABEL_STEP], labels[LABEL_JOB]
        except (KeyError, ValueError, IndexError):
            LOG.warning("pod without a Steward invocation; not recorded", pod=meta.get("name"))
            return None
        verdict = classify(pod)
        outputs = []
        if verdict.klass is AttemptClass.SUCCEEDED:
            outputs = [(f.name, f.bytes, f.adler32) for f in reported_outputs(pod)]
        return _Attempt(
            str(meta["uid"]), str(meta["name"]), step, job, index, site, verdict, outputs
        )

    def _record_attempts(
        self, store: LedgerStore, work: CampaignPass, attempts: list[_Attempt]
    ) -> None:
        scope = work.spec.outputs.scope
        rows: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        succeeded: dict[str, list[int]] = {}
        changed: dict[int, dict[str, Any]] = {}
        by_step: dict[str, list[_Attempt]] = {}
        for attempt in attempts:
            by_step.setdefault(attempt.step, []).append(attempt)
        for step, items in by_step.items():
            rows_by_index = store.invocation_states(work.uid, step, [a.index for a in items])
            self._check_outputs(store, work, work.step(step), items)
            never = work.now - timedelta(days=36500)
            for attempt in sorted(items, key=lambda a: a.verdict.ended_at or never):
                verdict = attempt.verdict
                memory = parse_memory(verdict.memory) if verdict.memory else None
                rows.append(
                    {
                        "pod_uid": attempt.pod_uid,
                        "campaign_uid": work.uid,
                        "step": step,
                        "index": attempt.index,
                        "job": attempt.job,
                        "pod": attempt.pod,
                        "node": verdict.node,
                        "site": attempt.site,
                        "klass": verdict.klass.value,
                        "reason": verdict.reason[:128],
                        "exit_code": verdict.exit_code,
                        "counted": verdict.counted,
                        "memory": memory,
                        "started_at": verdict.started_at,
                        "ended_at": verdict.ended_at,
                    }
                )
                row = rows_by_index.get(attempt.index)
                if row is None:
                    continue
                _apply(row, attempt)
                changed[row["id"]] = row
                if verdict.klass is AttemptClass.MISSING_OUTPUTS:
                    work.events.append(
                        (
                            "Warning",
                            "InvocationFailed",
                            f"step {step} invocation {attempt.index}: {verdict.reason}",
                        )
                    )
                if verdict.klass is AttemptClass.SUCCEEDED:
                    succeeded.setdefault(step, []).append(attempt.index)
                files.extend(
                    {
                        "did": f"{scope}:{name}",
                        "campaign_uid": work.uid,
                        "step": step,
                        "index": attempt.index,
                        "role": "junk" if name in attempt.junk else "output",
                        "bytes": size,
                        "adler32": adler32,
                        "registered": False,
                    }
                    for name, size, adler32 in attempt.outputs
                )
        store.add_attempts(rows)
        store.update_invocations(list(changed.values()))
        store.add_files(files)
        self._record_inputs(store, work, succeeded, files)

    def _check_outputs(
        self, store: LedgerStore, work: CampaignPass, step: Step | None, items: list[_Attempt]
    ) -> None:
        """Sort succeeded attempts' files by the step's ``expectedOutputs`` (LDM-592 LDF1).

        Files matching no pattern are junk; an attempt missing an expected file becomes a
        `MISSING_OUTPUTS` failure, counted, and fails its invocation for good: rerunning
        the same pipeline on the same data is an operator's call (``controls.retry``), or
        they accept the step as it is (``controls.accept``). Its files are still recorded
        (LDF1 d: whatever was written is brought back). Data ids are read only when a
        pattern has placeholders.
        """
        patterns = step.expected_outputs if step is not None else []
        done = [i for i, a in enumerate(items) if a.verdict.klass is AttemptClass.SUCCEEDED]
        if not patterns or not done:
            return
        data_ids: dict[int, str] = {}
        if any(output_placeholders(p) for p in patterns):
            data_ids = store.data_ids(work.uid, items[0].step, [items[i].index for i in done])
        for position in done:
            attempt = items[position]
            data_id = json.loads(data_ids.get(attempt.index, "{}"))
            names = [name for name, _, _ in attempt.outputs]
            try:
                sort = sort_outputs(patterns, data_id, names)
            except KeyError:  # a placeholder its data id lacks: nothing can match
                sort = OutputSort([], names, list(patterns))
            verdict = attempt.verdict
            if sort.missing:
                reason = f"no output matches {', '.join(sort.missing)}"[:128]
                verdict = replace(
                    verdict, klass=AttemptClass.MISSING_OUTPUTS, reason=reason, counted=True
                )
            items[position] = replace(attempt, verdict=verdict, junk=frozenset(sort.junk))

    def _record_inputs(
        self,
        store: LedgerStore,
        work: CampaignPass,
        succeeded: Mapping[str, list[int]],
        new_outputs: Sequence[Mapping[str, Any]],
    ) -> None:
        """Inputs of a dependent step's invocation: what its dependencies wrote for it."""
        rows: list[dict[str, Any]] = []
        for step_name, indexes in succeeded.items():
            step = work.step(step_name)
            if step is None or not step.depends_on:
                continue
            wanted = set(indexes)
            for dep in step.depends_on:
                written = [
                    (f.index, f.did)
                    for f in store.files(work.uid, role="output", step=dep, indexes=indexes)
                ]
                written += [(f["index"], f["did"]) for f in new_outputs if f["step"] == dep]
                rows.extend(
                    {
                        "did": did,
                        "campaign_uid": work.uid,
                        "step": step_name,
                        "index": index,
                        "role": "input",
                        "registered": True,
                    }
                    for index, did in written
                    if index in wanted
                )
        store.add_files(rows)


def _apply(row: dict[str, Any], attempt: _Attempt) -> None:
    """Fold one recorded attempt into its invocation's row (`LedgerStore.invocation_states`)."""
    verdict = attempt.verdict
    row["attempts"] += 1
    row["failures"] += int(verdict.counted)
    row["last_job"] = attempt.job
    row["last_class"] = verdict.klass.value
    row["exit_code"] = verdict.exit_code
    row["node"] = verdict.node
    row["site"] = attempt.site
    if row["started_at"] is None:
        row["started_at"] = verdict.started_at
    row["ended_at"] = verdict.ended_at
    if verdict.klass is AttemptClass.SUCCEEDED:
        row["state"] = SUCCEEDED
    elif verdict.klass is AttemptClass.MISSING_OUTPUTS:
        row["state"] = FAILED
