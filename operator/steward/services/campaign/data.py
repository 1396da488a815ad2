"""The campaign's data in Rucio: inputs staged at the site, outputs registered and archived."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from steward.exceptions import PermanentError
from steward.models.campaign import CampaignSpec
from steward.models.rse_expression import canonical
from steward.observability import EXTERNAL_ACTIONS
from steward.services import selection
from steward.services.campaign.base import CampaignBase, CampaignPass, disk_rse
from steward.services.campaign.plan import (
    DONE,
    Invocation,
    coverage_inputs,
    dataset_name,
    junk_dataset_name,
)
from steward.services.deletion import (
    DeletionGate,
    DeletionPlan,
    DeletionRequest,
    Mode,
    Operation,
    plan_deletion,
)
from steward.services.protections import (
    ClusterFacts,
    ExpressionCache,
    candidate_of,
    gather_placement,
    protections_of,
    with_sizes,
)
from steward.storage.ledger import (
    LedgerStore,
    decode_steps,
)
from steward.storage.rucio import File, RucioStorage, Rule, RuleSpec, RuleState

__all__ = [
    "OUTPUT_ACTIVITY",
    "RELEASE_LIFETIME",
    "STAGING_ACTIVITY",
    "STAGING_KEPT",
    "RucioSide",
    "coverage",
    "kept_reason",
    "plan_staging_release",
    "shard_inputs_name",
    "staging_dids",
]

RELEASE_LIFETIME: Final = timedelta(days=1)
"""Lifetime given to the staging rules when the campaign closes: Rucio's judge then removes
them, and the staged replicas become eligible for cleanup unless another rule holds them."""

STAGING_ACTIVITY: Final = "Staging"
STAGING_KEPT: Final = "StagingReleaseKept"
"""Degraded reason while the deletion gate keeps staging rules of a closed campaign."""
OUTPUT_ACTIVITY: Final = "Production Output"
_REGISTER_BATCH: Final = 5000


def coverage(rucio: RucioStorage, spec: CampaignSpec) -> list[Invocation]:
    """The campaign's invocations: its explicit data ids, or one per DID its query matches.

    Read once, when the campaign is enumerated into the ledger, and by ``steward plan`` to say
    what a new campaign would stage.
    """
    selected = spec.coverage
    if selected.data_ids is not None:
        return [Invocation(i, data_id) for i, data_id in enumerate(selected.data_ids)]
    assert selected.query is not None  # noqa: S101 - the model requires one of them
    dids = selection.select(rucio, selected.query)
    return [Invocation(i, {"did": did}) for i, did in enumerate(dids)]


def plan_staging_release(
    rucio: RucioStorage,
    rules: Sequence[Rule],
    *,
    requester: str,
    uid: str,
    tag: str,
    facts: ClusterFacts,
    now: datetime,
) -> DeletionPlan:
    """The deletion gate's plan for giving a campaign's staging ``rules`` `RELEASE_LIFETIME`.

    ``requester`` is ``Campaign/namespace/name`` and the rules carry its owner ``tag``, so
    neither the other-resource nor the scratch-owner protection applies (they are the
    campaign's own); every other protection does, from the cluster ``facts``. The campaign
    itself (``uid``) is not a reader of its own inputs here: it has ended (the ledger says
    so), though the status the operator's index holds may still say Running. The operator
    and ``steward plan`` both plan through here.
    """
    facts = replace(facts, ended=facts.ended | {uid})
    expressions = ExpressionCache(rucio)
    candidates = [
        replace(candidate_of(rule, expressions(rule.rse_expression), "Released"), owner=None)
        for rule in with_sizes(rucio, rules)
    ]
    placement = gather_placement(
        rucio,
        candidates,
        lambda found: [r for did in sorted(found) for r in rucio.list_did_rules(did)],
        expressions,
    )
    request = DeletionRequest(
        requester=requester,
        operation=Operation.EXPIRE,
        candidates=candidates,
        placement=placement,
        own_tags=frozenset({tag}),
        grace=RELEASE_LIFETIME,
    )
    return plan_deletion(request, protections_of(facts, rucio, now=now), now=now)


def kept_reason(plan: DeletionPlan, total: int) -> str:
    """Why the gate kept some of ``total`` staging rules, or empty when it keeps none."""
    if plan.mode is not Mode.ACT:
        return f"{total} staging rules kept: {plan.reason}"
    if not plan.saved:
        return ""
    counts = ", ".join(f"{name}={count}" for name, count in plan.protected().items())
    first = plan.saved[0]
    return (
        f"{len(plan.saved)} of {total} staging rules kept by the deletion gate ({counts}); "
        f"e.g. {first.candidate.did}: {first.detail}; the release is tried again each pass"
    )


def staging_dids(invocations: Iterable[Invocation]) -> set[str]:
    """The Rucio DIDs pre-staging brings to the site: what the first steps read."""
    return {did for invocation in invocations for did in coverage_inputs(invocation.data_id)}


class RucioSide(CampaignBase):
    """Stages inputs, registers outputs, verifies them at closeout."""

    # -- 3c. staging --------------------------------------------------------------------------

    def _staged(self, work: CampaignPass) -> bool:
        """Whether the inputs are on the site's disk (rules created here if missing)."""
        if work.staged is not None:
            return work.staged
        inputs_spec = work.spec.inputs
        if self._staged_per_shard(work):
            work.staged = True  # at the worker MultiKueue sends each shard to (`_shard_inputs`)
            return True
        dids = sorted(self._coverage_dids(work)) if inputs_spec.prestage else []
        if not dids:
            work.staged = True
            return True
        destination = canonical(inputs_spec.destination or self._disk_rse(work))
        rules = self._staging_rules(work, dids)
        covered = {r.did for r in rules}
        missing = [did for did in dids if did not in covered]
        if missing:
            self._audit(
                work,
                "stage-inputs",
                target=destination,
                after={"dids": len(missing)},
                message=f"rules to {destination} for {len(missing)} inputs",
            )
            spec = RuleSpec(
                rse_expression=destination,
                lifetime=inputs_spec.lifetime,
                activity=STAGING_ACTIVITY,
                comment=work.tag,
            )
            added = self.rucio.add_rules(missing, spec)
            EXTERNAL_ACTIONS.labels("Campaign", "stage-inputs").inc(len(added.created))
            rules = self._staging_rules(work, dids)
        states = Counter(rule.state for rule in rules)
        work.staging = {
            "rules": len(rules),
            "ok": states[RuleState.OK],
            "replicating": states[RuleState.REPLICATING] + states[RuleState.INJECT],
            "stuck": states[RuleState.STUCK],
            "released": False,
        }
        work.staged = len(rules) >= len(dids) and states[RuleState.OK] == len(rules)
        if not work.staged:
            work.waiting.append(
                f"staging inputs: {states[RuleState.OK]}/{len(dids)} rules OK at {destination}"
            )
        if states[RuleState.STUCK]:
            work.problems.append(
                ("StagingStuck", f"{states[RuleState.STUCK]} staging rules are STUCK in Rucio")
            )
        return work.staged

    @staticmethod
    def _staged_per_shard(work: CampaignPass) -> bool:
        """Whether each shard's inputs are staged at the worker that admits it.

        So for a multi-site campaign that pre-stages without a fixed ``inputs.destination``:
        the site is not known before MultiKueue picks it (`steward.services.campaign.
        staging_check`).
        """
        inputs = work.spec.inputs
        return bool(work.spec.sites) and inputs.prestage and inputs.destination is None

    def _shard_inputs(
        self, work: CampaignPass, step: str, job: str, indexes: Sequence[int]
    ) -> str | None:
        """Register the Rucio dataset of the inputs of JOB's INDEXES of STEP; return its DID.

        Each worker MultiKueue offers the Job to stages this dataset to its disk before its
        copy of the Workload is admitted there: it sees only that Workload, whose pod
        template's annotation names the dataset (`STAGING_ANNOTATION`). The dataset (in
        ``outputs.scope``) holds the input DIDs' files, as a dataset holds files and inputs
        may be datasets or files. Registering
        again after a crash finds it and attaches nothing twice. None when the shard reads
        no Rucio DIDs.
        """
        with self.sessions() as session:
            texts = LedgerStore(session).data_ids(work.uid, step, list(indexes))
        dids = sorted(staging_dids(Invocation(i, json.loads(t)) for i, t in texts.items()))
        if not dids:
            return None
        dataset = f"{work.spec.outputs.scope}:{shard_inputs_name(job, work.uid)}"
        files = sorted({file.did for did in dids for file in self.rucio.list_files(did)})
        if self.rucio.add_dataset(dataset):
            self._audit(
                work,
                "register-shard-inputs",
                target=dataset,
                after={"inputs": len(dids), "files": len(files)},
                message=f"the inputs of {job}, staged by the worker that admits it",
            )
        self.rucio.attach(dataset, files, ignore_duplicate=True)
        return dataset

    def _coverage_dids(self, work: CampaignPass) -> set[str]:
        """The Rucio DIDs of the coverage set (what the first steps read)."""
        assert work.record is not None  # noqa: S101 - enumerated first
        first = decode_steps(work.record.steps)[0][0]
        with self.sessions() as session:
            texts = LedgerStore(session).step_data_ids(work.uid, first)
        return staging_dids(Invocation(index, json.loads(text)) for index, text in texts.items())

    def _staging_rules(self, work: CampaignPass, inputs: Iterable[str]) -> list[Rule]:
        wanted = set(inputs)
        return [r for r in self.rucio.list_rules(comment=work.tag) if r.did in wanted]

    def _release_staging(self, work: CampaignPass) -> None:
        """Give the staging rules `RELEASE_LIFETIME` through the deletion gate, until all went.

        The rules' expiry is what removes the staged replicas, so it is a deletion like any
        other: an intent a stopped operator left open is closed first (`DeletionGate.recover`),
        then the gate judges the rules (`plan_staging_release`) and `DeletionGate.carry_out`
        writes its intent, sets the lifetime and writes the outcome. A rule already expiring
        sooner is left as it is. A rule the gate keeps (a legal hold, a lock, a pin, another
        campaign reading the same inputs, a freeze) keeps its lifetime; the Degraded
        condition says why and the next pass asks again, so the release happens once the
        protection is lifted. The campaign's phase does not wait for it. The ledger marks the
        release done only when no rule was kept.
        """
        with self.sessions() as session:
            store = LedgerStore(session)
            record = store.campaign(work.uid)
            if record is None or record.staging_released:
                return
        dids = self._coverage_dids(work) if work.spec.inputs.prestage else set()
        rules = self._staging_rules(work, dids) if dids else []
        horizon = work.now + RELEASE_LIFETIME
        pending = [r for r in rules if r.expires_at is None or r.expires_at > horizon]
        gate = self.gate or DeletionGate(self.rucio, self.audit, actor=self.actor, clock=self.clock)
        kept = ""
        if pending:
            gate.recover(work.ref)
            plan = plan_staging_release(
                self.rucio,
                pending,
                requester=f"Campaign/{work.namespace}/{work.ref.name}",
                uid=work.uid,
                tag=work.tag,
                facts=self.facts,
                now=work.now,
            )
            kept = kept_reason(plan, len(pending))
            if plan.mode is Mode.ACT and plan.removals:
                carried = gate.carry_out(plan, work.ref)
                EXTERNAL_ACTIONS.labels("Campaign", "release-staging").inc(len(carried.removed))
                self._audit(
                    work,
                    "release-staging",
                    after={"rules": list(carried.removed), "plan": plan.hash},
                    message=(
                        f"{len(carried.removed)} staging rules expire within {RELEASE_LIFETIME}"
                    ),
                )
        if kept:
            work.problems.append((STAGING_KEPT, kept))
            return
        with self.sessions.begin() as session:
            row = LedgerStore(session).campaign(work.uid)
            if row is not None:
                row.staging_released = True
        if work.record is not None:
            work.record.staging_released = True

    def _release_after_success(self, work: CampaignPass) -> None:
        """Release the staging rules ``inputs.releaseAfter`` after the campaign Succeeded.

        A campaign nobody closes out would otherwise pin the site's disk until the rules'
        own ``inputs.lifetime`` runs out. The ledger keeps when it succeeded (so an operator
        restart does not restart the grace); once the grace is over the release goes through
        `_release_staging`, with every protection of the deletion gate. If the campaign
        stops being Succeeded (a step was added), the time is forgotten and the release
        marked not done, so the rules its new steps stage are released after it succeeds
        again.
        """
        record = work.record
        if record is None or record.outcome is not None:
            return
        with self.sessions() as session:
            counts = LedgerStore(session).state_counts(work.uid)
        succeeded = all(
            sum(counts.get(step.name, {}).get(state, 0) for state in DONE) >= record.invocations
            for step in work.spec.steps
        )
        if succeeded != (record.succeeded_at is not None):
            with self.sessions.begin() as session:
                row = LedgerStore(session).campaign(work.uid)
                if row is not None:
                    row.succeeded_at = work.now if succeeded else None
                    if not succeeded:
                        row.staging_released = False
            record.succeeded_at = work.now if succeeded else None
            if not succeeded:
                record.staging_released = False
        if record.succeeded_at is None:
            return
        if _aware(work.now) >= _aware(record.succeeded_at) + work.spec.inputs.release_after:
            self._release_staging(work)

    # -- 3d. outputs --------------------------------------------------------------------------

    def _register_outputs(self, work: CampaignPass) -> None:
        """Register recorded outputs in Rucio: files, replicas, step datasets, archive rules.

        Each replica is registered where it was written: ``outputs.rse``, or the disk RSE of
        the site that ran the invocation (a multi-site campaign's shards write at the worker
        MultiKueue sent them to; a single-site campaign's at its site).

        Unexpected outputs (role ``junk``) are registered only with ``outputs.keepJunk``, in
        their step's junk dataset and never archived: LDM-592 LDF1 c brings them back "at
        operator's request", kept apart from the expected outputs. Without it they stay
        unregistered ledger rows, counted in status.
        """
        roles = ["output", "junk"] if work.spec.outputs.keep_junk else ["output"]
        for role in roles:
            with self.sessions() as session:
                store = LedgerStore(session)
                pending = store.files(work.uid, role=role, registered=False, limit=_REGISTER_BATCH)
                steps = sorted({row.step for row in pending})
                ran_at = {
                    step: store.sites(work.uid, step, [r.index for r in pending if r.step == step])
                    for step in steps
                }
            if pending:
                self._register(work, role, pending, ran_at)

    def _register(
        self,
        work: CampaignPass,
        role: str,
        pending: Sequence[Any],
        ran_at: Mapping[str, Mapping[int, str | None]],
    ) -> None:
        """Register one batch of a role's files: replicas, their step's dataset, archive.

        ``ran_at`` holds, by step and index, the site that ran each invocation.
        """
        scope = work.spec.outputs.scope
        by_step: dict[str, list[Any]] = {}
        for row in pending:
            by_step.setdefault(row.step, []).append(row)
        archive = work.spec.outputs.archive if role == "output" else None
        owned = self.rucio.list_rules(comment=work.tag) if archive else []
        written: set[str] = set()
        for step, rows in by_step.items():
            dataset = f"{scope}:{_dataset_of(role, work, step)}"
            self.rucio.add_dataset(dataset)
            if archive is not None and not any(r.did == dataset for r in owned):
                self._audit(work, "archive-outputs", target=dataset, after={"to": archive})
                self.rucio.add_rules(
                    [dataset],
                    RuleSpec(rse_expression=archive, activity=OUTPUT_ACTIVITY, comment=work.tag),
                )
            by_rse: dict[str, list[File]] = {}
            for row in rows:
                rse = self._output_rse(work, ran_at[step].get(row.index))
                by_rse.setdefault(rse, []).append(
                    File(row.did, bytes=row.bytes or 0, adler32=row.adler32 or "00000001")
                )
            for rse, files in sorted(by_rse.items()):
                self.rucio.add_replicas(rse, files)
                written.add(rse)
            self.rucio.attach(dataset, [row.did for row in rows], ignore_duplicate=True)
            EXTERNAL_ACTIONS.labels("Campaign", f"register-{role}s").inc(len(rows))
        with self.sessions.begin() as session:
            LedgerStore(session).mark_registered([row.id for row in pending])
        self._audit(
            work,
            f"register-{role}s",
            target=", ".join(sorted(written)),
            after={"files": len(pending), "steps": sorted(by_step)},
        )

    def _output_rse(self, work: CampaignPass, site: str | None) -> str:
        """Where an invocation that ran at SITE wrote its outputs."""
        if work.spec.outputs.rse:
            return work.spec.outputs.rse
        if work.spec.sites and site is not None and site != work.spec.site:
            rse = disk_rse(self._named_site(work, site))
            if rse is None:
                msg = f"Site {site!r} has no DISK RSE to register the outputs written there at"
                raise PermanentError(msg)
            return rse
        return self._disk_rse(work)

    def _missing_outputs(self, work: CampaignPass, outputs: Sequence[Any]) -> set[str]:
        scope = work.spec.outputs.scope
        expected: dict[str, set[str]] = {}
        for row in outputs:
            expected.setdefault(row.step, set()).add(row.did)
        missing: set[str] = set()
        for step, dids in expected.items():
            dataset = f"{scope}:{dataset_name(work.ref.name, step, work.uid)}"
            replicas = self.rucio.list_replicas([dataset])
            available = {did for did, states in replicas.items() if "AVAILABLE" in states.values()}
            missing |= dids - available
        return missing


def shard_inputs_name(job: str, uid: str) -> str:
    """The dataset (name only, in ``outputs.scope``) of one Job's inputs."""
    return f"{job}.inputs.{uid[:8]}"


def _dataset_of(role: str, work: CampaignPass, step: str) -> str:
    """The dataset (name only) a step's files of ``role`` are attached to."""
    name = junk_dataset_name if role == "junk" else dataset_name
    return name(work.ref.name, step, work.uid)


def _aware(value: datetime) -> datetime:
    """``value`` with a time zone: SQLite hands back naive UTC datetimes."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
