"""Rucio's rule verbs (its ``RuleClient``): creating a rule is idempotent.

Expressions are canonicalised (Rucio detects duplicates by comparing the expression as a
string), and a ``DuplicateRule`` means "adopt the existing rule", never "create another".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import requests
from rucio.common import exception as rucio_errors

from steward.exceptions import (
    RucioDuplicateRuleError,
    RucioNotFoundError,
    RucioPermanentError,
    RucioTransientError,
)
from steward.storage.rucio.callpath import (
    DEFAULT_BATCH,
    RucioCallPath,
    canonical_expression,
    caused_by,
    did_dict,
    seconds,
    split_did,
)
from steward.storage.rucio.types import (
    DEFAULT_ACTIVITY,
    UNSET,
    AddedRules,
    Lock,
    Rule,
    RuleSpec,
    RuleState,
    Unset,
)

__all__ = ["RuleClient", "refused_as_unsupported"]


def refused_as_unsupported(error: BaseException) -> bool:
    """Whether Rucio refused a rule change as unsupported (its ``UnsupportedOperation``).

    Among others, a new priority that Rucio cannot pass on to transfers already handed to the
    transfer tool (``rucio.core.rule.update_rule``): the rule keeps its old priority.
    """
    return caused_by(error, rucio_errors.UnsupportedOperation)


_STATE_CODES: Final = {
    RuleState.OK: "O",
    RuleState.REPLICATING: "R",
    RuleState.STUCK: "S",
    RuleState.SUSPENDED: "U",
    RuleState.WAITING_APPROVAL: "W",
    RuleState.INJECT: "I",
}
"""Rucio's one-letter codes, which its rule listing filter expects."""


@dataclass(slots=True)
class _Adding:
    """Progress of one `RucioStorage.add_rules` call."""

    spec: RuleSpec
    options: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    existing: dict[str, Rule] = field(default_factory=dict)


class RuleClient(RucioCallPath):
    """Replication rules: add (idempotently), get, update, delete, move, reduce, list."""

    def add_rules(
        self, dids: Sequence[str], spec: RuleSpec, *, batch_size: int = DEFAULT_BATCH
    ) -> AddedRules:
        """Make sure each DID has a rule as ``spec`` says; create, or find the one that exists.

        Give the DIDs believed to have no rule yet: they go to Rucio in batched calls. A
        ``DuplicateRule`` fails a whole batch without saying which DID (rucio#3807). Then
        one listing of our rules with this expression finds the existing ones, and the rest is
        sent again as one batch; should that still hit a duplicate (a rule created meanwhile),
        it falls back to one DID per call, finding each duplicate's rule with
        ``list_did_rules``. A rule matches when account, canonical expression and copies are
        equal. Existing rules are returned as found, untouched (``existing``): whether one is
        the caller's to take over (its comment says so) is the caller's decision, and nothing
        here writes to a rule someone else made.

        Raises
        ------
        RucioPermanentError
            Invalid expression, unknown DID, quota exceeded, and the like.
        RucioTransientError
            Rucio stayed unreachable through the retries.
        """
        adding = _Adding(spec, spec.client_options())
        pending = list(dict.fromkeys(dids))
        for start in range(0, len(pending), batch_size):
            self._add_batch(pending[start : start + batch_size], adding)
        return AddedRules(adding.ids, frozenset(adding.created), dict(adding.existing))

    def _add_batch(self, batch: list[str], adding: _Adding, *, listed: bool = False) -> None:
        """Add one batch; on a duplicate adopt what a listing finds, then go one by one."""
        try:
            rule_ids = self._call(
                "add_replication_rule",
                lambda c: c.add_replication_rule(
                    dids=[did_dict(d) for d in batch], **adding.options
                ),
            )
        except RucioDuplicateRuleError:
            if len(batch) == 1:
                self._adopt(batch[0], self._find_rule(batch[0], adding), adding)
            elif not listed:
                existing = self._matching_rules(batch, adding)
                for did, rule in existing.items():
                    self._adopt(did, rule, adding)
                rest = [did for did in batch if did not in existing]
                if rest:
                    self._add_batch(rest, adding, listed=True)
            else:
                for did in batch:
                    self._add_batch([did], adding, listed=True)
            return
        adding.ids.update(zip(batch, rule_ids, strict=True))
        adding.created.update(batch)

    def _matches(self, rule: Rule, adding: _Adding) -> bool:
        return (rule.account, rule.rse_expression, rule.copies) == (
            self.account,
            adding.options["rse_expression"],
            adding.spec.copies,
        )

    def _matching_rules(self, batch: list[str], adding: _Adding) -> dict[str, Rule]:
        """Our rules with the batch's expression and copies on DIDs of the batch (one call)."""
        scopes = {split_did(did)[0] for did in batch}
        rules = self.list_rules(
            rse_expression=adding.options["rse_expression"],
            scope=scopes.pop() if len(scopes) == 1 else None,
        )
        wanted = set(batch)
        return {r.did: r for r in rules if r.did in wanted and self._matches(r, adding)}

    def _find_rule(self, did: str, adding: _Adding) -> Rule:
        """Find the rule a single DID's ``DuplicateRule`` refers to."""
        for rule in self.list_did_rules(did):
            if self._matches(rule, adding):
                return rule
        msg = (
            f"Rucio reports a duplicate rule for {did} ({adding.options['rse_expression']}, "
            f"{adding.spec.copies} copies, account {self.account}) but lists none to adopt"
        )
        raise RucioDuplicateRuleError(msg)

    def _adopt(self, did: str, rule: Rule, adding: _Adding) -> None:
        """Report the existing rule for ``did`` (the caller decides whether it is its own)."""
        adding.ids[did] = rule.id
        adding.existing[did] = rule

    def add_rule(self, did: str, spec: RuleSpec) -> str:
        """Make sure ``did`` has a rule as ``spec`` says; return its id (see `add_rules`).

        The id may be of a rule that existed already, as it was (``add_rules`` says so).
        """
        return self.add_rules([did], spec).rule_ids[did]

    def get_rule(self, rule_id: str) -> Rule:
        """Return one rule.

        Raises
        ------
        RucioNotFoundError
            If there is no such rule (any more).
        """
        return Rule.from_rucio(
            self._call("get_replication_rule", lambda c: c.get_replication_rule(rule_id))
        )

    def update_rule(
        self,
        rule_id: str,
        *,
        lifetime: timedelta | Unset | None = UNSET,
        comment: str | Unset = UNSET,
        locked: bool | Unset = UNSET,
        activity: str | Unset = UNSET,
        priority: int | Unset = UNSET,
        source_replica_expression: str | Unset | None = UNSET,
        purge_replicas: bool | Unset = UNSET,
        state: Literal["SUSPENDED", "STUCK"] | Unset = UNSET,
        cancel_requests: bool | Unset = UNSET,
    ) -> None:
        """Change what Rucio lets change in place; `UNSET` options are left alone.

        ``lifetime`` counts from now; None removes the expiry, a zero or negative one expires
        the rule at once (judge-cleaner then deletes it). Expression and copies cannot change
        in place: use `change_rule`. ``cancel_requests`` with a ``state`` cancels the rule's
        queued and submitted transfers and marks its replicating locks STUCK.
        """
        given = {
            "lifetime": seconds(lifetime) if not isinstance(lifetime, Unset) else lifetime,
            "comment": comment,
            "locked": locked,
            "activity": activity,
            "priority": priority,
            "source_replica_expression": source_replica_expression,
            "purge_replicas": purge_replicas,
            "state": state.lower() if isinstance(state, str) else state,
            "cancel_requests": cancel_requests,
        }
        options = {key: value for key, value in given.items() if value is not UNSET}
        if options:
            self._call(
                "update_replication_rule",
                lambda c: c.update_replication_rule(rule_id, options),
            )

    def delete_rule(
        self, rule_id: str, *, purge_replicas: bool = False, unlock: bool = False
    ) -> bool:
        """Delete a rule; return False if it was already gone.

        Rucio's deletion is soft: the rule expires within the hour and judge-cleaner removes
        it. A locked rule (Rucio locks TAPE rules without lifetime) is refused unless
        ``unlock`` is True: protecting custodial copies is the caller's decision.
        """
        try:
            if unlock:
                self.update_rule(rule_id, locked=False)
            self._call(
                "delete_replication_rule",
                lambda c: c.delete_replication_rule(rule_id, purge_replicas=purge_replicas),
            )
        except RucioNotFoundError:
            return False
        return True

    def move_rule(self, rule_id: str, rse_expression: str) -> str:
        """Move a rule to another expression; return the new (child) rule's id.

        Rucio creates a child rule and expires the original once the child is OK, so the
        declared copies exist throughout. Idempotent: a child already heading to the same
        expression is returned; one heading elsewhere is detached and deleted first.
        """
        expression = canonical_expression(rse_expression)
        rule = self.get_rule(rule_id)
        if rule.child_rule_id is not None:
            child = self._existing_child(rule)
            if child is not None and child.rse_expression == expression:
                return child.id
            self._detach_child(rule)
        if rule.locked:  # else judge-cleaner would never remove the original
            self.update_rule(rule_id, locked=False)
        return str(
            self._call(
                "move_replication_rule",
                lambda c: c.move_replication_rule(rule_id, expression, override={}),
            )
        )

    def _existing_child(self, rule: Rule) -> Rule | None:
        """Return the rule's child rule, or None if it is gone."""
        assert rule.child_rule_id is not None  # noqa: S101 - checked by the caller
        try:
            return self.get_rule(rule.child_rule_id)
        except RucioNotFoundError:
            return None

    def _detach_child(self, rule: Rule) -> None:
        """Cancel a replacement in progress: the parent keeps its place, the child goes."""
        if rule.child_rule_id is None:
            return
        child_id = rule.child_rule_id
        self._call(
            "update_replication_rule",
            lambda c: c.update_replication_rule(rule.id, {"child_rule_id": None}),
        )
        self.update_rule(child_id, lifetime=timedelta(0))

    def reduce_rule(self, rule_id: str, copies: int) -> str:
        """Atomically replace an OK rule by one with fewer copies; return the new id.

        Rucio does not carry the comment over; this does.

        Raises
        ------
        RucioPermanentError
            If the rule is not OK (``RuleReplaceFailed``) or ``copies`` is not fewer.
        """
        rule = self.get_rule(rule_id)
        new_id = self._call("reduce_replication_rule", lambda c: _reduce(c, rule_id, copies))
        if new_id is None:
            new_id = self._reduced_rule(rule, copies)
        if rule.comment:
            self.update_rule(new_id, comment=rule.comment)
        return new_id

    def _reduced_rule(self, old: Rule, copies: int) -> str:
        """Find the rule Rucio's reduce created (its answer was lost, see `_reduce`)."""
        for rule in self.list_did_rules(old.did):
            if (rule.account, rule.rse_expression, rule.copies) == (
                old.account,
                old.rse_expression,
                copies,
            ):
                return rule.id
        msg = f"Rucio reduced rule {old.id} but lists no rule with {copies} copies for {old.did}"
        raise RucioPermanentError(msg)

    def change_rule(
        self, rule_id: str, *, rse_expression: str | None = None, copies: int | None = None
    ) -> str:
        """Change a rule's expression and/or copies; return the id of the rule now in charge.

        Never leaves fewer copies than declared on the way: fewer copies on an OK rule go
        through Rucio's atomic reduce; a new expression through move (the original expires
        once the new rule is OK); anything else through a new rule that becomes the old one's
        child, so Rucio expires the old one only once the new one is OK. A replacement
        already in progress towards another target is cancelled first.
        """
        rule = self.get_rule(rule_id)
        expression = canonical_expression(rse_expression or rule.rse_expression)
        wanted = copies or rule.copies
        if (expression, wanted) == (rule.rse_expression, rule.copies):
            return rule.id
        if rule.child_rule_id is not None:
            child = self._existing_child(rule)
            if child is not None and (child.rse_expression, child.copies) == (expression, wanted):
                return child.id
            self._detach_child(rule)
            rule = self.get_rule(rule_id)
        if expression == rule.rse_expression and wanted < rule.copies:
            if rule.state is RuleState.OK:
                return self.reduce_rule(rule.id, wanted)
        elif wanted == rule.copies:
            return self.move_rule(rule.id, expression)
        return self._replace(rule, expression, wanted)

    def _replace(self, rule: Rule, expression: str, copies: int) -> str:
        """Add the new rule, then make it the old one's child with the old one expiring."""
        remaining = None if rule.expires_at is None else rule.expires_at - datetime.now(UTC)
        spec = RuleSpec(
            rse_expression=expression,
            copies=copies,
            lifetime=remaining,
            grouping=rule.grouping,  # type: ignore[arg-type]
            priority=rule.priority,
            activity=rule.activity or DEFAULT_ACTIVITY,
            source_replica_expression=rule.source_replica_expression,
            comment=rule.comment,
            locked=rule.locked,
            purge_replicas=rule.purge_replicas,
        )
        new_id = self.add_rule(rule.did, spec)
        self._call(
            "update_replication_rule",
            lambda c: c.update_replication_rule(
                rule.id, {"child_rule_id": new_id, "lifetime": 0, "locked": False}
            ),
        )
        return new_id

    def list_rules(
        self,
        *,
        account: str | None = None,
        comment: str | None = None,
        scope: str | None = None,
        state: RuleState | None = None,
        rse_expression: str | None = None,
        updated_after: datetime | None = None,
    ) -> list[Rule]:
        """Rules matching all the given filters, in one call (``account`` defaults to ours).

        Steward puts an owner tag in each rule's comment, so ``comment=`` returns every rule of
        one Steward resource at once. ``account="*"`` lists every account's rules (no filter).
        ``updated_after`` keeps the rules whose ``updated_at`` is at or after it.

        What Rucio (41.5.1) accepts: the REST call passes its query arguments as the filters
        of ``rucio/core/rule.py`` ``list_rules``, which compares any rule column by equality
        (``account`` and ``scope`` also with ``*`` wildcards; the gateway puts ``*`` for
        either when absent) and knows four time bounds: ``created_before``,
        ``created_after``, ``updated_before`` and ``updated_after`` (``updated_at >=`` the
        value, parsed by ``str_to_date`` as RFC 1123, to the second). ``updated_at`` is set
        by the ORM on every write of the rule's row (state, lock counts, comment, expiry,
        soft deletion), so the answer is what changed since then. The rules table's
        indexes (rucio/db/sqla/models.py ``ReplicationRule``) are its id, (scope, name,
        account, rse_expression, copies), (scope, name), ``expires_at``, ``state`` and
        ``child_rule_id``: none on ``updated_at``, ``account`` or ``comments``, so Rucio's
        database still reads the rules table, but only the changed rows are sent.
        """
        filters = self._rule_filters(account, comment, scope, state, rse_expression)
        if updated_after is not None:
            filters["updated_after"] = _rfc1123(updated_after)
        rows = self._call(
            "list_replication_rules", lambda c: list(c.list_replication_rules(filters))
        )
        return [Rule.from_rucio(row) for row in rows]

    def iter_rules(
        self,
        *,
        account: str | None = None,
        comment: str | None = None,
        scope: str | None = None,
    ) -> Iterator[Rule]:
        """Like `list_rules`, but one rule at a time as Rucio streams them.

        A million rules as Rucio's client returns them (a dictionary of thirty keys each) take
        gigabytes; streamed, only what the caller keeps stays in memory. The request is
        retried like any call; a failure mid-stream raises `RucioTransientError` (the caller
        starts over: nothing was decided on a partial listing).
        """
        filters = self._rule_filters(account, comment, scope, None, None)
        rows = self._call("list_replication_rules", lambda c: c.list_replication_rules(filters))
        try:
            for row in rows:
                yield Rule.from_rucio(row)
        except (requests.RequestException, rucio_errors.RucioException) as error:
            msg = f"Rucio list_replication_rules failed while streaming: {error}"
            raise RucioTransientError(msg) from error

    def _rule_filters(
        self,
        account: str | None,
        comment: str | None,
        scope: str | None,
        state: RuleState | None,
        rse_expression: str | None,
    ) -> dict[str, str]:
        filters: dict[str, str] = {} if account == "*" else {"account": account or self.account}
        optional = {
            "comments": comment,
            "scope": scope,
            "state": _STATE_CODES[state] if state else None,
            "rse_expression": canonical_expression(rse_expression) if rse_expression else None,
        }
        filters.update({key: value for key, value in optional.items() if value is not None})
        return filters

    def refresh_rules(
        self, rule_ids: Iterable[str], *, comment: str | None = None
    ) -> dict[str, Rule]:
        """Return many rules of our account with one listing; gone ones are absent.

        One listing call replaces one ``get_replication_rule`` per rule (see
        bench/rucio_adapter.py); ``comment`` narrows the listing when all share it.
        """
        wanted = set(rule_ids)
        return {rule.id: rule for rule in self.list_rules(comment=comment) if rule.id in wanted}

    def list_did_rules(self, did: str) -> list[Rule]:
        """Every rule on one DID, of any account."""
        scope, name = split_did(did)
        rows = self._call("list_did_rules", lambda c: list(c.list_did_rules(scope, name)))
        return [Rule.from_rucio(row) for row in rows]

    def list_rule_locks(self, rule_id: str) -> list[Lock]:
        """The replica locks of one rule: which file's replica it holds on which RSE."""
        rows = self._call("list_replica_locks", lambda c: list(c.list_replica_locks(rule_id) or []))
        return [
            Lock(f"{row['scope']}:{row['name']}", str(row["rse"]), rule_id, str(row["state"]))
            for row in rows
        ]


def _reduce(client: Any, rule_id: str, copies: int) -> str | None:  # noqa: ANN401 - rucio client
    """Call ``reduce_replication_rule``; None when it succeeded but the answer was lost.

    rucio-clients 41.5.1 expects HTTP 200 from this call while the server answers 201
    Created, so a successful reduce raises a bare RucioException naming status 201.
    """
    try:
        return str(client.reduce_replication_rule(rule_id, copies)[0])
    except rucio_errors.RucioException as error:
        if type(error) is rucio_errors.RucioException and "http status code: 201" in str(error):
            return None
        raise


def _rfc1123(moment: datetime) -> str:
    """A time as Rucio's ``str_to_date`` parses it (``%a, %d %b %Y %H:%M:%S UTC``).

    Built by `email.utils.format_datetime`, whose day and month names do not depend on the
    locale, as strftime's do.
    """
    from email.utils import format_datetime  # noqa: PLC0415 - only this filter needs it

    return format_datetime(moment.astimezone(UTC), usegmt=True).replace(" GMT", " UTC")
