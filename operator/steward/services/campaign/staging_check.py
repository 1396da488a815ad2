"""The worker's staging check: a multi-site shard is admitted where its inputs are on disk.

A campaign with ``sites: [ncsa, in2p3]`` is dispatched by MultiKueue, which copies each Job's
Workload to the workers, sends the Job to the first worker whose copy is Admitted, and
deletes the other copies. A worker
admits a Workload only once every AdmissionCheck of its ClusterQueue is Ready, and each
worker's ClusterQueue lists Steward's own check (`STAGING_CHECK`, ``controllerName``
`STAGING_CONTROLLER`, put there by `QueueingService.ensure_worker_queue`). So at each worker,
this service:

- keeps the AdmissionCheck ``Active`` (Kueue keeps a ClusterQueue that lists an inactive check
  inactive);
- for each Workload with quota reserved whose check is Pending, reads the Rucio dataset of the
  shard's inputs from its pod template's annotation (`STAGING_ANNOTATION`: the manager
  registered it and put it on the Job's pod template; Kueue copies the template into the
  Workload's ``podSets``; MultiKueue copies the Workload to each worker it offers the Job
  to, and the Job itself only to the worker that admitted), makes a rule of it to the
  site's disk RSE, owner-tagged for the staging check at this cluster (`OWNER`), and
  sets the check Ready once the rule is OK (`check_state`); a recall from tape keeps it
  Pending, its message saying how far;
- releases, through the deletion gate, the rules whose copy is gone: the workers that lost
  the race (MultiKueue deleted their copies), and the winner's once the shard finished and
  MultiKueue removed its copy. The release gives the rules `RELEASE_LIFETIME` like a
  campaign's own release; a protection or an error postpones it to the next pass.

A Workload that names no staging dataset (the site's own campaigns share the queue) is Ready
at once. Marking the check ``Retry`` would free the quota a recall holds, but
evicts the copy, after which MultiKueue may dispatch it elsewhere: it is not used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from steward.exceptions import NotFoundError, PermanentError
from steward.models.rse_expression import canonical
from steward.models.site import Site
from steward.observability import EXTERNAL_ACTIONS, get_logger
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.campaign.base import disk_rse, iso, now_utc
from steward.services.campaign.data import (
    RELEASE_LIFETIME,
    STAGING_ACTIVITY,
    kept_reason,
    plan_staging_release,
)
from steward.services.deletion import DeletionGate, Mode
from steward.services.ownership import owner_tag
from steward.services.protections import ClusterFacts
from steward.services.queueing import (
    STAGING_ANNOTATION,
    STAGING_CHECK,
    STAGING_FIELD_MANAGER,
)
from steward.storage.kueue import KUEUE_API_VERSION, KueueStorage
from steward.storage.rucio import RucioStorage, Rule, RuleSpec, RuleState

__all__ = [
    "OWNER",
    "CheckPass",
    "StagingCheckService",
    "check_state",
    "staging_dataset",
]

LOG = get_logger(__name__)

READY: Final = "Ready"
PENDING: Final = "Pending"
OWNER: Final = f"AdmissionCheck/{STAGING_CHECK}"
"""The identity the staging rules are tagged with at a cluster (`owner_tag`), in place of the
check's UID. Steward creates the check itself and creates it again if it is deleted; a new
UID would give the new check a new tag, and the old check's rules would never be listed, so
never released. The check is one per cluster, so its name is as unique as a UID."""


def check_state(dataset: str, rse: str, rules: Sequence[Rule]) -> tuple[str, str]:
    """The check's state and message for a shard whose inputs are DATASET, staged to RSE.

    Ready only when Steward's rule of the dataset at RSE exists and Rucio says OK: every
    file has a replica there. Otherwise Pending, the message naming Rucio's state and
    locks (a tape recall is REPLICATING for as long as it takes; a STUCK rule waits for
    Rucio's judge to retry it, which a site's admin may need to look at).
    """
    mine = [rule for rule in rules if rule.did == dataset]
    if not mine:
        return PENDING, f"no staging rule of {dataset} at {rse} yet"
    rule = mine[0]
    if rule.state is RuleState.OK:
        return READY, f"inputs {dataset} are on {rse} (rule {rule.id} OK)"
    locks = f"{rule.locks_ok} OK, {rule.locks_replicating} replicating, {rule.locks_stuck} stuck"
    detail = f"; Rucio says: {rule.error}" if rule.error else ""
    return (
        PENDING,
        f"staging {dataset} to {rse}: rule {rule.id} {rule.state.value} ({locks}){detail}",
    )


@dataclass
class CheckPass:
    """What one pass of the staging check did (for logs and tests)."""

    ready: list[str] = field(default_factory=list)
    """Workloads (``namespace/name``) whose check was set Ready."""
    pending: dict[str, str] = field(default_factory=dict)
    """Workloads whose check stays Pending, and why."""
    staged: list[str] = field(default_factory=list)
    """Datasets given a staging rule this pass."""
    released: list[str] = field(default_factory=list)
    """Rules given their release lifetime this pass."""
    kept: str = ""
    """Why the deletion gate kept some rules of gone copies (empty when none)."""
    gone: list[str] = field(default_factory=list)
    """Workloads deleted between the pass's listing and the write of their check."""


@dataclass
class _Pass:
    """One pass's shared state."""

    tag: str
    ref: ResourceRef
    now: datetime
    rse: str | None
    rules: list[Rule]
    """Steward's staging rules here, listed at the start (and the ones made since)."""
    done: CheckPass


def _check(workload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for state in (workload.get("status") or {}).get("admissionChecks") or []:
        if state.get("name") == STAGING_CHECK:
            return dict(state)
    return None


def staging_dataset(workload: Mapping[str, Any]) -> str | None:
    """The dataset of inputs a Workload's pods read (`STAGING_ANNOTATION`), or None."""
    for pod_set in (workload.get("spec") or {}).get("podSets") or []:
        template = (pod_set.get("template") or {}).get("metadata") or {}
        dataset = (template.get("annotations") or {}).get(STAGING_ANNOTATION)
        if dataset:
            return str(dataset)
    return None


def _quota_reserved(workload: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "QuotaReserved" and c.get("status") == "True"
        for c in (workload.get("status") or {}).get("conditions") or []
    )


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


@dataclass(kw_only=True)
class StagingCheckService:
    """Answers this cluster's staging AdmissionCheck (one pass per call, idempotent)."""

    kueue: KueueStorage
    rucio: RucioStorage
    audit: AuditService
    cluster_id: str
    actor: str = "steward-operator"
    clock: Callable[[], datetime] = field(default=now_utc)
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    """What the deletion gate judges the release of gone copies' rules against."""
    gate: DeletionGate | None = None

    def reconcile(self, site: Site) -> CheckPass:
        """One pass at this worker SITE: activate the check, stage, set states, release.

        Nothing to do while this cluster has no staging AdmissionCheck (no multi-site
        campaign listed the site yet).

        Raises
        ------
        PermanentError
            The site has no DISK RSE to stage to (the check stays Pending, saying so).
        TransientError, RucioTransientError
            Kubernetes or Rucio could not be reached; the next pass tries again.
        """
        done = CheckPass()
        check = self.kueue.get("AdmissionCheck", STAGING_CHECK)
        if check is None:
            return done
        now = self.clock()
        self._activate(check, now)
        ref = ResourceRef(
            kind="AdmissionCheck", name=STAGING_CHECK, uid=check["metadata"].get("uid")
        )
        tag = owner_tag(self.cluster_id, OWNER)
        rules = self.rucio.list_rules(comment=tag)  # listed before the copies: see _release
        work = _Pass(tag, ref, now, disk_rse(site), list(rules), done)
        workloads = self.kueue.list("Workload")
        for workload in workloads:
            self._answer(work, workload)
        self._release(work, rules, {staging_dataset(workload) for workload in workloads})
        return done

    def _activate(self, check: Mapping[str, Any], now: datetime) -> None:
        """Set the AdmissionCheck's ``Active`` condition True (once; kept as it is after)."""
        generation = check["metadata"].get("generation")
        for condition in (check.get("status") or {}).get("conditions") or []:
            if (
                condition.get("type") == "Active"
                and condition.get("status") == "True"
                and condition.get("observedGeneration") == generation
            ):
                return
        self.kueue.apply(
            {
                "apiVersion": KUEUE_API_VERSION,
                "kind": "AdmissionCheck",
                "metadata": {"name": STAGING_CHECK},
                "status": {
                    "conditions": [
                        {
                            "type": "Active",
                            "status": "True",
                            "reason": "Active",
                            "message": "Steward stages the inputs of multi-site shards here",
                            "lastTransitionTime": iso(now),
                            "observedGeneration": generation,
                        }
                    ]
                },
            },
            field_manager=STAGING_FIELD_MANAGER,
            status=True,
        )

    def _answer(self, work: _Pass, workload: Mapping[str, Any]) -> None:
        """Stage one Workload's inputs and set its check's state, if it is ours to answer."""
        done, now, rse = work.done, work.now, work.rse
        check = _check(workload)
        if check is None or check.get("state") != PENDING or not _quota_reserved(workload):
            return
        meta = workload["metadata"]
        key = _key(meta["namespace"], meta["name"])
        dataset = staging_dataset(workload)
        if dataset is None:
            state, message = READY, "no inputs to stage"
        elif rse is None:
            msg = "the Site has no DISK RSE to stage multi-site inputs to"
            if not self._set(workload, check, PENDING, msg, now):
                done.gone.append(key)
                return
            raise PermanentError(msg)
        else:
            target = canonical(rse)
            if not any(rule.did == dataset for rule in work.rules):
                self._stage(work, dataset, target)
                work.rules.extend(
                    r for r in self.rucio.list_did_rules(dataset) if r.comment == work.tag
                )
            state, message = check_state(dataset, target, work.rules)
        if not self._set(workload, check, state, message, now):
            done.gone.append(key)
        elif state == READY:
            done.ready.append(key)
        else:
            done.pending[key] = message

    def _stage(self, work: _Pass, dataset: str, rse: str) -> None:
        """Make the staging rule of DATASET at RSE (found and adopted if it exists)."""
        self.audit.record(
            AuditRecord(
                resource=work.ref,
                action="stage-inputs",
                actor=self.actor,
                target=rse,
                after={"dataset": dataset},
                message=f"rule of {dataset} to {rse}",
            )
        )
        spec = RuleSpec(rse_expression=rse, activity=STAGING_ACTIVITY, comment=work.tag)
        added = self.rucio.add_rules([dataset], spec)
        EXTERNAL_ACTIONS.labels("AdmissionCheck", "stage-inputs").inc(len(added.created))
        work.done.staged.append(dataset)

    def _set(
        self,
        workload: Mapping[str, Any],
        check: Mapping[str, Any],
        state: str,
        message: str,
        now: datetime,
    ) -> bool:
        """Write the check's STATE and MESSAGE into the Workload's status (if they changed).

        False when the Workload is gone: MultiKueue deletes a worker's copy whenever another
        worker admits the Job or the Job ends, so a Workload of the pass's listing can be
        gone by its write. Nothing is left to answer; a rule staged for it is released by a
        later pass, whose listing no longer names its dataset. (Kueue's CRDs missing would
        raise the same error, but then the listing itself failed.)
        """
        if check.get("state") == state and check.get("message") == message:
            return True
        changed = check.get("state") != state
        meta = workload["metadata"]
        entry = {
            "name": STAGING_CHECK,
            "state": state,
            "message": message[:32768],
            "lastTransitionTime": iso(now) if changed else check.get("lastTransitionTime"),
        }
        try:
            self.kueue.apply(
                {
                    "apiVersion": KUEUE_API_VERSION,
                    "kind": "Workload",
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                    "status": {"admissionChecks": [entry]},
                },
                field_manager=STAGING_FIELD_MANAGER,
                status=True,
            )
        except NotFoundError:
            key = _key(meta["namespace"], meta["name"])
            LOG.info("workload gone before its staging check was written", workload=key)
            return False
        return True

    def _release(self, work: _Pass, rules: Iterable[Rule], live: set[str | None]) -> None:
        """Release, through the deletion gate, the rules no copy here needs any more.

        RULES were listed before the copies (LIVE: the datasets their Workloads name), so a rule
        made after the listing of the rules is never taken for one whose copy is gone. A
        rule already expiring within `RELEASE_LIFETIME` was released before.
        """
        done, now, ref = work.done, work.now, work.ref
        horizon = now + RELEASE_LIFETIME
        gone = [
            rule
            for rule in rules
            if rule.did not in live and (rule.expires_at is None or rule.expires_at > horizon)
        ]
        if not gone:
            return
        gate = self.gate or DeletionGate(self.rucio, self.audit, actor=self.actor, clock=self.clock)
        gate.recover(ref)
        plan = plan_staging_release(
            self.rucio,
            gone,
            requester=f"AdmissionCheck/{STAGING_CHECK}",
            uid=str(ref.uid),
            tag=work.tag,
            facts=self.facts,
            now=now,
        )
        done.kept = kept_reason(plan, len(gone))
        if plan.mode is Mode.ACT and plan.removals:
            carried = gate.carry_out(plan, ref)
            EXTERNAL_ACTIONS.labels("AdmissionCheck", "release-staging").inc(len(carried.removed))
            done.released.extend(carried.removed)
            self.audit.record(
                AuditRecord(
                    resource=ref,
                    action="release-staging",
                    actor=self.actor,
                    after={"rules": list(carried.removed), "plan": plan.hash},
                    message=f"{len(carried.removed)} staging rules of gone copies released",
                )
            )
        if done.kept:
            LOG.warning("staging release kept", reason=done.kept)
