"""History of one resource: its file's git log interleaved with what the engine did.

An auditor asks "who changed raw-to-in2p3, when, from which commit, and what did the engine do
because of it"; the answer is the commits that touched the resource's file and the audit rows
of the resource, in time order, each audit row naming the commit it acted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from steward.exceptions import NotFoundError
from steward.schema.audit import AuditEntry
from steward.services.audit import AuditService, utc
from steward.services.gitops import DIRTY_SUFFIX
from steward.services.validation import validate_paths
from steward.storage.audit import AuditFilter
from steward.storage.repo import Commit, GitRepo

__all__ = ["Event", "HistoryService"]


@dataclass(frozen=True)
class Event:
    """One line of history: a commit or an audit row."""

    time: datetime
    commit: Commit | None = None
    entry: AuditEntry | None = None


@dataclass
class HistoryService:
    """Builds a resource's history from the repository and the audit store."""

    repo: GitRepo
    audit: AuditService

    def locate(self, kind: str, name: str, paths: Sequence[Path]) -> Path:
        """Return the file that declares ``kind/name``.

        Raises
        ------
        NotFoundError
            If no file under ``paths`` declares it.
        """
        result = validate_paths(paths)
        for loaded in result.resources:
            resource = loaded.resource
            if resource.kind == kind and resource.metadata.name == name:
                return loaded.document.path
        msg = f"no file under {', '.join(map(str, paths))} declares {kind}/{name}"
        raise NotFoundError(msg)

    def events(
        self, kind: str, name: str, paths: Sequence[Path], namespace: str | None = None
    ) -> list[Event]:
        """Return the commits of the resource's file, each followed by what the engine did.

        An audit row that names the commit it acted on follows that commit; the others (the
        resource's file gone from the tree, or an action not tied to a commit) are placed by
        time. Git records seconds only, so grouping by commit, not by time, keeps an apply
        after the commit it applied even within one second. An apply of uncommitted changes
        follows the commit it was made on top of.
        """
        try:
            path: Path | None = self.locate(kind, name, paths)
        except NotFoundError:
            path = None
        commits = self.repo.history(path) if path is not None else []
        entries = self.audit.query(AuditFilter(kind=kind, name=name, namespace=namespace))
        shas = {c.sha for c in commits}
        blocks: list[list[Event]] = [
            [
                Event(utc(c.time), commit=c),
                *(Event(utc(e.time), entry=e) for e in entries if _base(e) == c.sha),
            ]
            for c in commits
        ]
        blocks.extend([Event(utc(e.time), entry=e)] for e in entries if _base(e) not in shas)
        blocks.sort(key=lambda block: (block[0].time, block[0].entry is not None))
        return [event for block in blocks for event in block]


def _base(entry: AuditEntry) -> str | None:
    """The commit an audit row acted on, without the dirty marker."""
    commit = entry.git_commit
    return commit.removesuffix(DIRTY_SUFFIX) if commit else None
