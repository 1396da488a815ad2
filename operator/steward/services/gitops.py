"""From git to cluster: plan what would change, apply with provenance, prune with guards.

Lessons from GitOps engines are built in: prune is opt-in and shows its list first (Argo CD's
prune is off by default), it never touches resources Steward did not apply (Flux deleted
namespaces it never owned, flux2#1366), and it refuses to delete more than a fraction of what
it manages (Argo CD wiped applications when its repository server returned an empty set,
argo-cd#2573). Every change the plan marks destructive (a prune, a move to another
destination, fewer copies, leaving dry run...) is refused unless the person applying says
``--allow-destructive``, and the audit row of each names who allowed it (design.md guarantee
2: destructive changes show in a plan before they happen). Taking a protection away (a legal
hold released, a governance lock or a pin removed or shortened, by an edit or a prune) is
destructive too, and names the DIDs it stops protecting
(`steward.services.protection_changes`). New resources go through the API
server's dry run at plan time too, so what the server would refuse fails at plan, not apply.
Files applied with uncommitted changes (``--allow-dirty``) are marked dirty in their
annotations and audit rows: the commit they name is the last one, not what was applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from steward.constants import GROUP
from steward.exceptions import PermanentError
from steward.models import KINDS
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.protection_changes import protection_losses
from steward.services.validation import Loaded, ValidationResult
from steward.storage.kubernetes import KubeResources, ResourceKey
from steward.storage.repo import GitRepo, Provenance

__all__ = [
    "ANNOTATION_AUTHOR",
    "ANNOTATION_COMMIT",
    "ANNOTATION_DIRTY",
    "ANNOTATION_PATH",
    "DIRTY_SUFFIX",
    "MANAGED_BY",
    "MANAGED_LABEL",
    "SOURCE_LABEL",
    "Action",
    "Change",
    "ConsequenceEstimator",
    "Consequences",
    "DestructiveRefused",
    "GitOpsService",
    "Plan",
    "PlanRefused",
    "PruneRefused",
    "commit_of",
]

ANNOTATION_COMMIT = f"{GROUP}/git-commit"
ANNOTATION_PATH = f"{GROUP}/git-path"
ANNOTATION_AUTHOR = f"{GROUP}/git-author"
ANNOTATION_DIRTY = f"{GROUP}/git-dirty"
"""``"true"`` when the file was applied with uncommitted changes (``--allow-dirty``)."""
DIRTY_SUFFIX = "-dirty"
"""Appended to the commit in audit rows of dirty applies, as ``git describe --dirty`` does."""
MANAGED_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "steward-apply"
SOURCE_LABEL = f"{GROUP}/source"
_ORDER = {info.kind: index for index, info in enumerate(KINDS)}


class Action(StrEnum):
    """What apply would do to one resource."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    PRUNE = "prune"


@dataclass
class Consequences:
    """What a change means outside Kubernetes: lines for people, details for machines."""

    lines: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Change:
    """One resource's planned change."""

    key: ResourceKey
    action: Action
    diff: list[str] = field(default_factory=list)
    destructive: list[str] = field(default_factory=list)
    consequences: list[str] = field(default_factory=list)
    rucio: list[dict[str, Any]] = field(default_factory=list)
    """The Rucio side, exact numbers (`steward.services.plan.RucioImpact.to_json`)."""
    lost_protections: list[dict[str, Any]] = field(default_factory=list)
    """What the change stops protecting, every DID
    (`steward.services.protection_changes.ProtectionLoss.to_json`)."""
    refused: str | None = None
    """Why the API server's dry run refused the change; apply would fail the same way."""
    desired: dict[str, Any] | None = None
    """What apply sends (the stamped document)."""
    preview: dict[str, Any] | None = None
    """What the object would look like after apply (server-side dry run, defaults filled)."""
    live: dict[str, Any] | None = None
    """The object as it is now."""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary for ``--format json``."""
        return {
            "kind": self.key.kind,
            "namespace": self.key.namespace,
            "name": self.key.name,
            "action": self.action.value,
            "diff": self.diff,
            "destructive": self.destructive,
            "consequences": self.consequences,
            "rucio": self.rucio,
            "lost_protections": self.lost_protections,
            "refused": self.refused,
        }


@dataclass
class Plan:
    """Every change apply would make."""

    changes: list[Change]

    @property
    def pending(self) -> list[Change]:
        """Changes that are not no-ops."""
        return [c for c in self.changes if c.action is not Action.UNCHANGED]

    @property
    def prunes(self) -> list[Change]:
        """Resources that would be deleted."""
        return [c for c in self.changes if c.action is Action.PRUNE]

    @property
    def destructive(self) -> list[Change]:
        """Changes that can lose data or stop work."""
        return [c for c in self.changes if c.destructive]

    @property
    def refused(self) -> list[Change]:
        """Changes the API server would refuse."""
        return [c for c in self.changes if c.refused]


class PruneRefused(Exception):  # noqa: N818 - it is a refusal, not an error of Steward
    """Prune would delete more than allowed; nothing was deleted."""


class DestructiveRefused(Exception):  # noqa: N818 - a refusal, as PruneRefused
    """The plan has destructive changes and nobody allowed them; nothing was applied."""


class PlanRefused(Exception):  # noqa: N818 - a refusal, as PruneRefused
    """The API server would refuse part of the plan; nothing was applied."""


class ConsequenceEstimator(Protocol):
    """Says what a change means outside Kubernetes (Rucio rules, replicas, bytes)."""

    def __call__(self, change: Change, plan: Sequence[Change]) -> Consequences:
        """Return the consequences of ``change``, one of every change of ``plan``.

        The whole plan is passed so a consequence is judged as the plan leaves the cluster
        (a hold another change of the same plan releases no longer protects).
        """
        ...


def commit_of(annotations: dict[str, str]) -> str | None:
    """The commit an applied resource came from, with `DIRTY_SUFFIX` when it was dirty."""
    commit = annotations.get(ANNOTATION_COMMIT) or None
    if annotations.get(ANNOTATION_DIRTY) == "true":
        return f"{commit or 'uncommitted'}{DIRTY_SUFFIX}"
    return commit


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:  # noqa: ANN401 - any JSON
    if isinstance(value, dict) and not value:
        return {}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def spec_diff(live: dict[str, Any] | None, desired: dict[str, Any]) -> list[str]:
    """Field-level differences of ``spec`` and Steward's labels (``path: old -> new``)."""
    before = _flatten({"spec": (live or {}).get("spec", {})})
    after = _flatten({"spec": desired.get("spec", {})})
    lines = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old != new:
            lines.append(f"{path}: {_show(old)} -> {_show(new)}")
    live_labels = (live or {}).get("metadata", {}).get("labels", {}) or {}
    for key, value in sorted(desired.get("metadata", {}).get("labels", {}).items()):
        if live_labels.get(key) != value:
            lines.append(f"metadata.labels.{key}: {_show(live_labels.get(key))} -> {value}")
    return lines


def _show(value: Any) -> str:  # noqa: ANN401 - any JSON value
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)


def _rule_risks(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    reasons = []
    if new.get("copies", 1) < old.get("copies", 1):
        reasons.append(f"reduces copies {old.get('copies', 1)} -> {new.get('copies', 1)}")
    if new.get("destination") != old.get("destination"):
        reasons.append("moves replicas to another destination")
    if new.get("lifetime") and new.get("lifetime") != old.get("lifetime"):
        reasons.append(f"sets lifetime {new.get('lifetime')}: replicas expire after it")
    return reasons


def _retention_risks(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    reasons = []
    if old.get("dryRun") and not new.get("dryRun"):
        reasons.append("leaves dryRun: the policy starts expiring data")
    if new.get("action") == "Delete" and old.get("action") != "Delete":
        reasons.append("switches to action Delete: rules are removed at once")
    return reasons


def _site_risks(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    gone = {r["name"] for r in old.get("rses", [])} - {r["name"] for r in new.get("rses", [])}
    return [f"removes RSEs {', '.join(sorted(gone))}"] if gone else []


def _campaign_risks(_old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    state = new.get("desiredState")
    return [f"sets desiredState {state}"] if state in {"Terminated", "ClosedOut"} else []


_RISKS = {
    "ReplicationRule": _rule_risks,
    "RetentionPolicy": _retention_risks,
    "Site": _site_risks,
    "Campaign": _campaign_risks,
}


def destructive_changes(change: Change) -> list[str]:
    """Say why a change can lose data or stop work; empty when it cannot."""
    if change.action is Action.PRUNE:
        return [f"deletes {change.key}"]
    if change.action is not Action.UPDATE or change.key.kind not in _RISKS:
        return []
    old = (change.live or {}).get("spec", {})
    new = (change.preview or change.desired or {}).get("spec", {})
    return _RISKS[change.key.kind](old, new)


def stamp(body: dict[str, Any], provenance: Provenance, source: str) -> dict[str, Any]:
    """Return ``body`` with Steward's labels (managed-by, source repo) and git provenance."""
    meta = dict(body.get("metadata", {}))
    meta["labels"] = {**meta.get("labels", {}), MANAGED_LABEL: MANAGED_BY, SOURCE_LABEL: source}
    meta["annotations"] = {
        **meta.get("annotations", {}),
        ANNOTATION_COMMIT: provenance.commit,
        ANNOTATION_PATH: provenance.path,
        ANNOTATION_AUTHOR: provenance.author,
    }
    if provenance.dirty:
        # Server-side apply drops the annotation again once a clean apply leaves it out.
        meta["annotations"][ANNOTATION_DIRTY] = "true"
    return {**body, "metadata": meta}


def _source_document(loaded: Loaded) -> dict[str, Any]:
    body = {k: v for k, v in loaded.document.data.items() if k != "status"}
    return dict(body)


@dataclass
class GitOpsService:
    """Plan and apply a validated set of resources against the cluster."""

    kube: KubeResources
    repo: GitRepo
    audit: AuditService | None = None
    consequences: ConsequenceEstimator | None = None
    actor: str = "steward-apply"
    progress: Callable[[str], None] = field(default=lambda _line: None)
    user: str = ""
    """Who runs the command (git's user.name <user.email>), named when they allow a
    destructive change."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """Whether a lock or a pin is still in force (an ended one protects nothing to lose)."""

    def desired(self, result: ValidationResult) -> list[tuple[dict[str, Any], Provenance]]:
        """Documents to apply, stamped, in dependency order (Sites first)."""
        stamped = []
        source = self.repo.identity()
        for loaded in result.resources:
            provenance = self.repo.provenance(loaded.document.path)
            stamped.append((stamp(_source_document(loaded), provenance, source), provenance))
        return sorted(stamped, key=lambda item: (_ORDER[item[0]["kind"]], ResourceKey.of(item[0])))

    def plan(
        self,
        result: ValidationResult,
        *,
        prune: bool = False,
        scope: Sequence[Path] = (),
    ) -> Plan:
        """Compare desired documents with the live cluster (server-side dry-run apply)."""
        changes = []
        wanted: set[ResourceKey] = set()
        for body, _provenance in self.desired(result):
            key = ResourceKey.of(body)
            wanted.add(key)
            live = self.kube.get(key)
            try:
                dry: dict[str, Any] | None = self.kube.apply(body, dry_run=True)
                refused = None
            except PermanentError as error:
                dry, refused = None, str(error)
            if live is None:
                change = Change(key, Action.CREATE, spec_diff(None, body), desired=body)
            else:
                diff = spec_diff(live, dry or body)
                action = Action.UPDATE if diff or refused else Action.UNCHANGED
                change = Change(key, action, diff, desired=body, preview=dry, live=live)
            change.refused = refused
            changes.append(change)
        if prune:
            changes.extend(self._prune_candidates(wanted, scope))
        now = self.clock()
        for change in changes:
            change.destructive = destructive_changes(change)
            if change.action in {Action.UPDATE, Action.PRUNE}:
                desired = None if change.action is Action.PRUNE else change.desired
                losses = protection_losses(change.key.kind, change.live, desired, now=now)
                change.destructive.extend(loss.line() for loss in losses)
                change.lost_protections = [loss.to_json() for loss in losses]
        for change in changes:
            if self.consequences is not None and change.action is not Action.UNCHANGED:
                found = self.consequences(change, changes)
                change.consequences, change.rucio = found.lines, found.details
        return Plan(changes)

    def _prune_candidates(self, wanted: set[ResourceKey], scope: Sequence[Path]) -> list[Change]:
        prefixes = [self.repo.relative(p) for p in scope]
        selector = f"{MANAGED_LABEL}={MANAGED_BY},{SOURCE_LABEL}={self.repo.identity()}"
        candidates = []
        for info in KINDS:
            for live in self.kube.list(info.kind, selector):
                key = ResourceKey.of({**live, "kind": info.kind})
                path = live.get("metadata", {}).get("annotations", {}).get(ANNOTATION_PATH, "")
                in_scope = not prefixes or any(
                    path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes
                )
                if key not in wanted and in_scope:
                    candidates.append(Change(key, Action.PRUNE, live=live))
        return candidates

    def apply(
        self,
        plan: Plan,
        *,
        max_prune_fraction: float = 0.25,
        allow_destructive: bool = False,
    ) -> list[Change]:
        """Apply every pending change of ``plan``; prune last, under the fraction guard.

        Raises
        ------
        PlanRefused
            When the API server's dry run refused a change. Nothing is applied then.
        DestructiveRefused
            When a change is destructive and ``allow_destructive`` is not set, naming each.
            Nothing is applied then.
        PruneRefused
            When prune would delete more than ``max_prune_fraction`` of the resources Steward
            manages, even with ``allow_destructive``: raising the fraction is a decision of
            its own. Nothing is applied then.
        """
        if plan.refused:
            listed = "; ".join(f"{c.key}: {c.refused}" for c in plan.refused)
            raise PlanRefused(f"the API server refuses {listed}")
        if plan.destructive and not allow_destructive:
            listed = "; ".join(f"{c.key} ({', '.join(c.destructive)})" for c in plan.destructive)
            msg = (
                f"{len(plan.destructive)} destructive changes: {listed}; check the plan and "
                "use --allow-destructive if they are right"
            )
            raise DestructiveRefused(msg)
        managed = len([c for c in plan.changes if c.action is not Action.CREATE])
        prunes = plan.prunes
        if prunes and len(prunes) > max_prune_fraction * max(managed, 1):
            msg = (
                f"prune would delete {len(prunes)} of {managed} resources Steward manages, "
                f"more than {max_prune_fraction:.0%}; check the list and raise "
                "--max-prune-fraction if it is right"
            )
            raise PruneRefused(msg)
        done = []
        for change in plan.changes:
            if change.action in {Action.CREATE, Action.UPDATE, Action.UNCHANGED}:
                assert change.desired is not None  # noqa: S101 - set for these actions
                applied = self.kube.apply(change.desired)
                if change.action is not Action.UNCHANGED:
                    self._record(change, "k8s.apply", applied)
                    self.progress(f"{change.action.value} {change.key}")
                done.append(change)
        for change in prunes:
            self.kube.delete(change.key)
            self._record(change, "k8s.prune", None)
            self.progress(f"pruned {change.key}")
            done.append(change)
        return done

    def _record(self, change: Change, action: str, after: dict[str, Any] | None) -> None:
        if self.audit is None:
            return
        source = after or change.live or {}
        meta = source.get("metadata", {})
        annotations = meta.get("annotations", {}) or {}
        ref = ResourceRef(
            kind=change.key.kind,
            namespace=change.key.namespace,
            name=change.key.name,
            uid=meta.get("uid"),
            generation=meta.get("generation"),
            git_commit=commit_of(annotations),
            git_author=annotations.get(ANNOTATION_AUTHOR),
            git_path=annotations.get(ANNOTATION_PATH),
        )
        notes = []
        if change.destructive:
            who = self.user or "an unnamed user"
            notes.append(
                f"DESTRUCTIVE, allowed by {who} with --allow-destructive: "
                + ", ".join(change.destructive)
            )
        if after is not None and annotations.get(ANNOTATION_DIRTY) == "true":
            notes.append(
                "applied with uncommitted changes (--allow-dirty): not the content of commit "
                + (annotations.get(ANNOTATION_COMMIT) or "(none)")
            )
        self.audit.record(
            AuditRecord(
                resource=ref,
                action=action,
                actor=self.actor,
                before=(change.live or {}).get("spec"),
                after=(after or {}).get("spec"),
                message="; ".join([*notes, *change.diff[:20]]),
            )
        )
