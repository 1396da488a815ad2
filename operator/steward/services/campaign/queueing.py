"""A campaign's Jobs on Kueue: their queue and priority labels, pause, and Kueue's view.

When the campaign's Site declares batch capacity (``spec.batch``), every Job of the campaign
is handed to Kueue (`steward.services.queueing`): its LocalQueue (the campaign's ``queue`` or
the Site's default, or for ``sites: [...]`` the multi-site queue that MultiKueue dispatches in
that order) and the WorkloadPriorityClass of its priority. Kueue then owns the Jobs'
``suspend``: it admits a Job when the queue's quota has room, preempts lower priorities, and
a pause deactivates the Job's Workload (Kueue suspends the Job; the Job controller keeps the
indexes that completed, so a resume redoes none). The status reports Kueue's view: admitted
and pending Jobs, Kueue's reason for a waiting one, evictions, and the site of each admitted
Job. A Site without batch capacity keeps the Jobs out of Kueue, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steward.exceptions import NotFoundError
from steward.services.campaign.base import CampaignBase, CampaignPass
from steward.services.queueing import QueueingService, WorkloadState, job_labels, resolve_queue

__all__ = ["QueueSide"]


@dataclass(kw_only=True)
class QueueSide(CampaignBase):
    """The campaign service's side facing Kueue."""

    queueing: QueueingService | None = None
    """Kueue's objects; None keeps every Job out of Kueue."""

    def _queue(self, work: CampaignPass) -> str | None:
        """Ensure the campaign's LocalQueue and return its name; None when not on Kueue.

        A cluster without Kueue runs a single-site campaign's Jobs without queueing, with a
        Warning Event saying so (the local stack without ``--kueue``, a site not yet on Kueue).

        Raises
        ------
        PermanentError
            The campaign names a queue the Site does not have, or a site of ``sites`` lacks
            batch capacity or a kubeconfig Secret; NotFoundError when a multi-site campaign
            finds no Kueue.
        """
        if self.queueing is None:
            return None
        try:
            if work.spec.sites:
                sites = [self._named_site(work, name) for name in work.spec.sites]
                return self.queueing.ensure_multisite(sites, work.namespace, work.spec.queue)
            site = self._site(work)
            if site.spec.batch is None:
                return None
            queue = resolve_queue(site, work.spec.queue)
            self.queueing.ensure_local_queues(site, work.namespace)
        except NotFoundError as error:
            if work.spec.sites:
                raise  # dispatch across sites cannot work without Kueue
            message = (
                f"the Site declares batch capacity but Kueue is not installed here ({error}): "
                "the Jobs run without queueing"
            )
            work.events.append(("Warning", "KueueMissing", message))
            return None
        return queue

    def _queue_labels(self, work: CampaignPass) -> dict[str, str]:
        """The labels that hand a new Job to Kueue (none when the campaign is not on Kueue)."""
        if work.queue is None:
            return {}
        return job_labels(work.queue, work.spec.priority)

    def _workloads(self, work: CampaignPass) -> dict[str, tuple[str, WorkloadState, bool]]:
        """The Workload of each of the campaign's Jobs: job -> (workload, state, active)."""
        if work.queue is None or self.queueing is None:
            return {}
        if work.workloads is None:
            work.workloads = self.queueing.workloads_by_job(work.namespace, set(work.live))
        return work.workloads

    def _queue_pause(self, work: CampaignPass, job: str, *, paused: bool) -> bool:
        """Pause or resume JOB through Kueue; False when Kueue does not manage it.

        Kueue owns a queued Job's ``suspend`` (it unsuspends on admission), so setting it
        would fight Kueue: the Workload is deactivated instead, which Kueue turns into a
        suspension that keeps the completed indexes.
        """
        if work.queue is None or self.queueing is None:
            return False
        found = self._workloads(work).get(job)
        if found is None:
            return True  # Kueue has not made its Workload yet; the next pass pauses it
        workload, _, active = found
        if active == paused:
            self.queueing.set_active(work.namespace, workload, active=not paused)
            self._audit(work, "pause-workload" if paused else "resume-workload", target=job)
        return True

    def _queue_status(self, work: CampaignPass) -> dict[str, Any] | None:
        """The ``queueing`` status: Kueue's view of the campaign's Jobs."""
        if work.queue is None:
            return None
        return queueing_status(work.queue, self._workloads(work))


def queueing_status(
    queue: str, workloads: Mapping[str, tuple[str, WorkloadState, bool]]
) -> dict[str, Any]:
    """Summarise the Jobs' Workloads: admitted, pending (with Kueue's reason), sites."""
    admitted = pending = evictions = 0
    reason = ""
    sites: Counter[str] = Counter()
    for _, state, _ in sorted(workloads.values(), key=lambda found: found[0]):
        evictions += state.evictions
        if state.phase in {"Admitted", "Finished"}:
            admitted += 1
            if state.cluster:
                sites[state.cluster] += 1
        else:
            pending += 1
            reason = reason or state.message
    return {
        "queue": queue,
        "admitted": admitted,
        "pending": pending,
        "reason": reason,
        "evictions": evictions,
        "sites": dict(sorted(sites.items())),
    }
