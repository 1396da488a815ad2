"""Rows of the campaign ledger through one session. Never commits: services own transactions.

Bulk paths (enumerating a coverage set, recording a pass of ended pods) use Core inserts and
updates with many parameter sets, so a campaign of 100,000 invocations per step is written
in seconds, and a pass recording thousands of attempts is one transaction.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from steward.schema.ledger import (
    LedgerAttempt,
    LedgerCampaign,
    LedgerControl,
    LedgerFile,
    LedgerInvocation,
    LedgerJob,
)

__all__ = [
    "LedgerAttempt",
    "LedgerCampaign",
    "LedgerControl",
    "LedgerFile",
    "LedgerInvocation",
    "LedgerJob",
    "LedgerStore",
    "decode_steps",
    "encode_steps",
]

_CHUNK: Final = 500
"""Values per ``IN (...)``: SQLite allows 32,766 bound parameters, older builds 999."""

_UNFINISHED: Final = (
    LedgerCampaign.outcome.is_(None),
    LedgerCampaign.staging_released.is_(False),
)
"""A campaign that still holds its inputs: not closed out, terminated or deleted, and its
staging not released (a Succeeded campaign lets go of its inputs with its staging, after
``inputs.releaseAfter``; if it stops being Succeeded, the release is marked not done again)."""


def encode_steps(steps: Iterable[tuple[str, Sequence[str]]]) -> str:
    """``ledger_campaigns.steps``: each step's name and the steps it depends on, in order."""
    return json.dumps([{"name": n, "dependsOn": list(d)} for n, d in steps], separators=(",", ":"))


def decode_steps(text: str) -> list[tuple[str, list[str]]]:
    """Read `encode_steps`' text back."""
    return [(item["name"], list(item["dependsOn"])) for item in json.loads(text)]


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class LedgerStore:
    """Ledger rows through one session; the calling service owns the transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def _insert(self, table: type[Any], rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert many rows as one Core statement on the session's connection.

        Half the time of the ORM's bulk path for 100,000 rows, which matters when a campaign
        of that size is enumerated before its first Job can be created.
        """
        self._session.connection().execute(table.__table__.insert(), list(rows))

    # -- campaigns ------------------------------------------------------------------------

    def campaign(self, uid: str) -> LedgerCampaign | None:
        """The campaign row, or None before its coverage set was enumerated."""
        return self._session.get(LedgerCampaign, uid)

    def campaigns_named(self, namespace: str | None, name: str) -> list[LedgerCampaign]:
        """Campaigns of that name (in that namespace when given), newest first."""
        statement = select(LedgerCampaign).where(LedgerCampaign.name == name)
        if namespace is not None:
            statement = statement.where(LedgerCampaign.namespace == namespace)
        statement = statement.order_by(LedgerCampaign.created_at.desc())
        return list(self._session.execute(statement).scalars())

    def add_campaign(self, row: LedgerCampaign) -> None:
        """Insert a campaign row."""
        self._session.add(row)
        self._session.flush()

    # -- invocations ----------------------------------------------------------------------

    def add_invocations(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert invocation rows (dicts of column values) in bulk."""
        if rows:
            self._insert(LedgerInvocation, rows)

    def invocations(
        self,
        uid: str,
        step: str,
        *,
        indexes: Iterable[int] | None = None,
        states: Iterable[str] | None = None,
        job: str | None = None,
    ) -> list[LedgerInvocation]:
        """Invocations of one step, narrowed by index, state or Job; ordered by index."""
        base = select(LedgerInvocation).where(
            LedgerInvocation.campaign_uid == uid, LedgerInvocation.step == step
        )
        if states is not None:
            base = base.where(LedgerInvocation.state.in_(list(states)))
        if job is not None:
            base = base.where(LedgerInvocation.job == job)
        if indexes is None:
            return list(self._session.execute(base.order_by(LedgerInvocation.index)).scalars())
        found: list[LedgerInvocation] = []
        for chunk in _chunks(sorted(set(indexes))):
            statement = base.where(LedgerInvocation.index.in_(chunk))
            found.extend(self._session.execute(statement).scalars())
        return sorted(found, key=lambda row: row.index)

    def step_data_ids(self, uid: str, step: str) -> dict[int, str]:
        """Every data id (canonical JSON) of a step, by invocation index."""
        statement = select(LedgerInvocation.index, LedgerInvocation.data_id).where(
            LedgerInvocation.campaign_uid == uid, LedgerInvocation.step == step
        )
        return dict(self._session.execute(statement).all())

    def invocation_states(
        self, uid: str, step: str, indexes: Sequence[int]
    ) -> dict[int, dict[str, Any]]:
        """What recording an attempt changes, for some invocations of a step, by index.

        Plain values (id, state, attempts, failures, started_at) rather than ORM objects: a
        pass records thousands of attempts and the unit of work would double its cost.
        """
        columns = (
            LedgerInvocation.id,
            LedgerInvocation.index,
            LedgerInvocation.state,
            LedgerInvocation.attempts,
            LedgerInvocation.failures,
            LedgerInvocation.started_at,
        )
        found: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(sorted(set(indexes))):
            statement = select(*columns).where(
                LedgerInvocation.campaign_uid == uid,
                LedgerInvocation.step == step,
                LedgerInvocation.index.in_(chunk),
            )
            for row in self._session.execute(statement).mappings():
                found[row["index"]] = dict(row)
        return found

    def update_invocations(self, changes: Sequence[Mapping[str, Any]]) -> None:
        """Write changed invocations: each mapping has ``id`` and the same other columns."""
        if not changes:
            return
        keys = sorted(k for k in changes[0] if k != "id")
        statement = (
            update(LedgerInvocation)
            .where(LedgerInvocation.id == bindparam("row_id"))
            .values({key: bindparam(f"new_{key}") for key in keys})
        )
        params = [{"row_id": c["id"], **{f"new_{k}": c[k] for k in keys}} for c in changes]
        self._session.connection().execute(statement, params)

    def data_ids(self, uid: str, step: str, indexes: Sequence[int]) -> dict[int, str]:
        """Data ids (canonical JSON) of some invocations of a step, by index."""
        return self._by_index(LedgerInvocation.data_id, uid, step, indexes)

    def sites(self, uid: str, step: str, indexes: Sequence[int]) -> dict[int, str | None]:
        """The site that ran the last attempt of some invocations of a step, by index."""
        return self._by_index(LedgerInvocation.site, uid, step, indexes)

    def _by_index(
        self, column: InstrumentedAttribute[Any], uid: str, step: str, indexes: Sequence[int]
    ) -> dict[int, Any]:
        """One column of some invocations of a step, by index, in chunks of bound parameters."""
        result: dict[int, Any] = {}
        for chunk in _chunks(sorted(set(indexes))):
            statement = select(LedgerInvocation.index, column).where(
                LedgerInvocation.campaign_uid == uid,
                LedgerInvocation.step == step,
                LedgerInvocation.index.in_(chunk),
            )
            result.update(dict(self._session.execute(statement).all()))
        return result

    def assign_range(self, uid: str, step: str, indexes: range, job: str) -> None:
        """Hand the waiting invocations ``indexes`` of a step to a Job (state queued)."""
        self._session.execute(
            update(LedgerInvocation)
            .where(
                LedgerInvocation.campaign_uid == uid,
                LedgerInvocation.step == step,
                LedgerInvocation.index >= indexes.start,
                LedgerInvocation.index < indexes.stop,
                LedgerInvocation.state == "waiting",
            )
            .values(state="queued", job=job)
        )

    def cancel_unfinished(self, uid: str) -> None:
        """Mark every waiting or queued invocation of a campaign cancelled."""
        self._session.execute(
            update(LedgerInvocation)
            .where(
                LedgerInvocation.campaign_uid == uid,
                LedgerInvocation.state.in_(["waiting", "queued"]),
            )
            .values(state="cancelled")
        )

    def state_counts(self, uid: str) -> dict[str, dict[str, int]]:
        """Invocations by step and state."""
        statement = (
            select(LedgerInvocation.step, LedgerInvocation.state, func.count())
            .where(LedgerInvocation.campaign_uid == uid)
            .group_by(LedgerInvocation.step, LedgerInvocation.state)
        )
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for step, state, count in self._session.execute(statement):
            counts[step][state] = count
        return dict(counts)

    # -- attempts -------------------------------------------------------------------------

    def known_pods(self, pod_uids: Sequence[str]) -> set[str]:
        """Which of these pods have an attempt row already."""
        known: set[str] = set()
        for chunk in _chunks(list(pod_uids)):
            statement = select(LedgerAttempt.pod_uid).where(LedgerAttempt.pod_uid.in_(chunk))
            known.update(self._session.execute(statement).scalars())
        return known

    def add_attempts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert attempt rows in bulk."""
        if rows:
            self._insert(LedgerAttempt, rows)

    def site_counts(self, uid: str, state: str) -> dict[str, dict[str, int]]:
        """Invocations in STATE by step and the site that ran their last attempt."""
        statement = (
            select(LedgerInvocation.step, LedgerInvocation.site, func.count())
            .where(
                LedgerInvocation.campaign_uid == uid,
                LedgerInvocation.state == state,
                LedgerInvocation.site.is_not(None),
            )
            .group_by(LedgerInvocation.step, LedgerInvocation.site)
        )
        counts: dict[str, dict[str, int]] = {}
        for step, site, count in self._session.execute(statement):
            counts.setdefault(step, {})[str(site)] = count
        return counts

    def attempt_counts(self, uid: str) -> list[tuple[str, str, int | None, int]]:
        """Attempts as (step, class, exit code, count)."""
        statement = (
            select(LedgerAttempt.step, LedgerAttempt.klass, LedgerAttempt.exit_code, func.count())
            .where(LedgerAttempt.campaign_uid == uid)
            .group_by(LedgerAttempt.step, LedgerAttempt.klass, LedgerAttempt.exit_code)
        )
        return [(s, k, e, n) for s, k, e, n in self._session.execute(statement)]

    def attempts(
        self, uid: str, step: str | None = None, index: int | None = None
    ) -> list[LedgerAttempt]:
        """Attempts of a campaign (a step, an invocation), in the order they ended."""
        statement: Select[LedgerAttempt] = select(LedgerAttempt).where(
            LedgerAttempt.campaign_uid == uid
        )
        if step is not None:
            statement = statement.where(LedgerAttempt.step == step)
        if index is not None:
            statement = statement.where(LedgerAttempt.index == index)
        statement = statement.order_by(LedgerAttempt.ended_at, LedgerAttempt.id)
        return list(self._session.execute(statement).scalars())

    def attempt_facts(
        self, uid: str
    ) -> list[tuple[str, str, int | None, str | None, Any, Any, int | None]]:
        """Every attempt as (step, class, exit code, node, started, ended, memory)."""
        statement = select(
            LedgerAttempt.step,
            LedgerAttempt.klass,
            LedgerAttempt.exit_code,
            LedgerAttempt.node,
            LedgerAttempt.started_at,
            LedgerAttempt.ended_at,
            LedgerAttempt.memory,
        ).where(LedgerAttempt.campaign_uid == uid)
        return [tuple(row) for row in self._session.execute(statement)]  # type: ignore[misc]

    def memory_facts(self, uid: str) -> list[tuple[str, int]]:
        """Every invocation's current memory as (step, bytes)."""
        statement = select(LedgerInvocation.step, LedgerInvocation.memory).where(
            LedgerInvocation.campaign_uid == uid
        )
        return [(step, memory) for step, memory in self._session.execute(statement)]

    # -- Jobs -----------------------------------------------------------------------------

    def jobs(self, uid: str) -> list[LedgerJob]:
        """Every Job planned for the campaign, in planning order."""
        statement = select(LedgerJob).where(LedgerJob.campaign_uid == uid).order_by(LedgerJob.id)
        return list(self._session.execute(statement).scalars())

    def add_job(self, row: LedgerJob) -> None:
        """Insert a planned Job."""
        self._session.add(row)
        self._session.flush()

    def mark_job_created(self, uid: str, name: str) -> None:
        """Record that the Job exists in the cluster."""
        self._session.execute(
            update(LedgerJob)
            .where(LedgerJob.campaign_uid == uid, LedgerJob.name == name)
            .values(created=True)
        )

    # -- files ----------------------------------------------------------------------------

    def add_files(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert file rows, skipping ones present (same campaign, step, index, role, DID)."""
        if not rows:
            return 0
        existing: set[tuple[str, int, str, str]] = set()
        uid = rows[0]["campaign_uid"]
        for chunk in _chunks(sorted({row["did"] for row in rows})):
            statement = select(
                LedgerFile.step, LedgerFile.index, LedgerFile.role, LedgerFile.did
            ).where(LedgerFile.campaign_uid == uid, LedgerFile.did.in_(chunk))
            existing.update((s, i, r, d) for s, i, r, d in self._session.execute(statement))
        new: list[Mapping[str, Any]] = []
        for row in rows:
            key = (row["step"], row["index"], row["role"], row["did"])
            if key not in existing:
                existing.add(key)
                new.append(row)
        if new:
            self._insert(LedgerFile, new)
        return len(new)

    def files(
        self,
        uid: str,
        *,
        role: str,
        step: str | None = None,
        indexes: Iterable[int] | None = None,
        registered: bool | None = None,
        limit: int | None = None,
    ) -> list[LedgerFile]:
        """Files of a campaign by role, narrowed by step, invocations and registration."""
        base = select(LedgerFile).where(LedgerFile.campaign_uid == uid, LedgerFile.role == role)
        if step is not None:
            base = base.where(LedgerFile.step == step)
        if registered is not None:
            base = base.where(LedgerFile.registered == registered)
        base = base.order_by(LedgerFile.step, LedgerFile.index, LedgerFile.did)
        if indexes is None:
            if limit is not None:
                base = base.limit(limit)
            return list(self._session.execute(base).scalars())
        found: list[LedgerFile] = []
        for chunk in _chunks(sorted(set(indexes))):
            found.extend(self._session.execute(base.where(LedgerFile.index.in_(chunk))).scalars())
        return found

    def file_count(self, uid: str, *, role: str, registered: bool | None = None) -> int:
        """How many files of a role a campaign has (registered ones only, when asked)."""
        statement = select(func.count()).where(
            LedgerFile.campaign_uid == uid, LedgerFile.role == role
        )
        if registered is not None:
            statement = statement.where(LedgerFile.registered == registered)
        return int(self._session.execute(statement).scalar_one())

    def file_counts(self, uid: str, *, role: str) -> dict[str, int]:
        """How many files of a role a campaign has, by step."""
        statement = (
            select(LedgerFile.step, func.count())
            .where(LedgerFile.campaign_uid == uid, LedgerFile.role == role)
            .group_by(LedgerFile.step)
        )
        return {step: int(count) for step, count in self._session.execute(statement).all()}

    def mark_registered(self, ids: Sequence[int]) -> None:
        """Record that Rucio has these output files."""
        for chunk in _chunks(list(ids)):
            self._session.execute(
                update(LedgerFile).where(LedgerFile.id.in_(chunk)).values(registered=True)
            )

    def files_named(self, did: str) -> list[LedgerFile]:
        """Every ledger row about one DID (as input or output, in any campaign)."""
        statement = select(LedgerFile).where(LedgerFile.did == did).order_by(LedgerFile.id)
        return list(self._session.execute(statement).scalars())

    def any_unfinished(self) -> bool:
        """Whether some campaign still holds its inputs (most plans then ask nothing more)."""
        statement = select(LedgerCampaign.uid).where(*_UNFINISHED).limit(1)
        return self._session.execute(statement).first() is not None

    def unfinished_coverage(self, hashes: Mapping[str, str]) -> list[tuple[str, LedgerCampaign]]:
        """(DID, campaign) for each DID in the coverage set of a campaign not finished yet.

        ``hashes`` maps the data-id hash of ``{"did": DID}`` to that DID.
        """
        found: set[tuple[str, str]] = set()
        campaigns: dict[str, LedgerCampaign] = {}
        for chunk in _chunks(sorted(hashes)):
            statement = (
                select(LedgerInvocation.data_id_hash, LedgerCampaign)
                .join(LedgerCampaign, LedgerCampaign.uid == LedgerInvocation.campaign_uid)
                .where(LedgerInvocation.data_id_hash.in_(chunk), *_UNFINISHED)
                .distinct()
            )
            for digest, campaign in self._session.execute(statement):
                campaigns[campaign.uid] = campaign
                found.add((hashes[digest], campaign.uid))
        return [(did, campaigns[uid]) for did, uid in sorted(found)]

    def coverage_invocations(self, digest: str) -> list[LedgerInvocation]:
        """Invocations (of every campaign and step) whose data-id hash is ``digest``."""
        statement = (
            select(LedgerInvocation)
            .where(LedgerInvocation.data_id_hash == digest)
            .order_by(LedgerInvocation.campaign_uid, LedgerInvocation.step)
        )
        return list(self._session.execute(statement).scalars())

    def unfinished_inputs(self, dids: Sequence[str]) -> list[tuple[str, LedgerCampaign]]:
        """(DID, campaign) for each DID a later step of an unfinished campaign reads.

        Those are earlier steps' outputs; the first steps' inputs are the coverage set
        (`unfinished_coverage`).
        """
        found: list[tuple[str, LedgerCampaign]] = []
        for chunk in _chunks(sorted(set(dids))):
            statement = (
                select(LedgerFile.did, LedgerCampaign)
                .join(LedgerCampaign, LedgerCampaign.uid == LedgerFile.campaign_uid)
                .where(LedgerFile.role == "input", LedgerFile.did.in_(chunk), *_UNFINISHED)
                .distinct()
            )
            found.extend((did, campaign) for did, campaign in self._session.execute(statement))
        return found

    # -- controls -------------------------------------------------------------------------

    def controls(self, uid: str) -> list[LedgerControl]:
        """Controls acted on, oldest first."""
        statement = (
            select(LedgerControl)
            .where(LedgerControl.campaign_uid == uid)
            .order_by(LedgerControl.id)
        )
        return list(self._session.execute(statement).scalars())

    def add_control(self, row: LedgerControl) -> None:
        """Record a control as acted on."""
        self._session.add(row)
        self._session.flush()
