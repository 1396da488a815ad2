"""The policy repository in git: provenance of files, dirtiness, and history of one file.

``steward apply`` stamps every resource with the commit, path and author it came from, and
``steward history`` interleaves a file's commits with what the engine did; both ask git here,
through the ``git`` command, which every checkout has.
"""

from __future__ import annotations

import getpass
import hashlib
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from steward.exceptions import PermanentError

__all__ = ["Commit", "GitError", "GitRepo", "Provenance"]

_SEP = "\x1f"


class GitError(PermanentError):
    """git failed or the path is not in a repository."""


@dataclass(frozen=True)
class Provenance:
    """Where a resource's file came from."""

    commit: str
    author: str
    path: str
    dirty: bool


@dataclass(frozen=True)
class Commit:
    """One commit touching a file."""

    sha: str
    author: str
    time: datetime
    subject: str
    diff: str


@dataclass(frozen=True)
class GitRepo:
    """A git work tree."""

    root: Path

    @classmethod
    def find(cls, start: Path) -> GitRepo:
        """Return the repository containing ``start``.

        Raises
        ------
        GitError
            If ``start`` is not inside a git work tree.
        """
        directory = start if start.is_dir() else start.parent
        top = _git(directory, "rev-parse", "--show-toplevel").strip()
        return cls(Path(top))

    def _run(self, *args: str) -> str:
        return _git(self.root, *args)

    def identity(self) -> str:
        """Return a stable identifier of this repository: its ``origin`` URL, else its location.

        Prune only considers resources stamped with the same identity, so two repositories
        applying into one cluster never prune each other's resources.
        """
        try:
            origin = self._run("remote", "get-url", "origin").strip()
        except GitError:
            origin = ""
        source = origin or str(self.root.resolve())
        return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]

    def user(self) -> str:
        """Who is at the keyboard, as git knows them: ``name <email>``, else the login name."""
        try:
            name = self._run("config", "user.name").strip()
            email = self._run("config", "user.email").strip()
        except GitError:
            name = email = ""
        if name or email:
            return f"{name} <{email}>".strip()
        return getpass.getuser()

    def head(self) -> str:
        """Return the commit checked out."""
        return self._run("rev-parse", "HEAD").strip()

    def dirty_files(self, paths: list[Path] | None = None) -> list[str]:
        """Files with uncommitted changes (or untracked) among ``paths`` (all when None)."""
        spec = [str(p.resolve()) for p in paths] if paths else []
        out = self._run("status", "--porcelain", "--untracked-files=all", "--", *spec)
        return [line[3:] for line in out.splitlines() if line.strip()]

    def relative(self, path: Path) -> str:
        """``path`` relative to the repository root, with forward slashes."""
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    def provenance(self, path: Path) -> Provenance:
        """Return the last commit that touched ``path``, its author, and whether it is dirty."""
        relative = self.relative(path)
        out = self._run("log", "-1", f"--format=%H{_SEP}%an <%ae>", "--", relative).strip()
        if not out:
            return Provenance(commit="", author="", path=relative, dirty=True)
        commit, author = out.split(_SEP, 1)
        return Provenance(
            commit=commit, author=author, path=relative, dirty=bool(self.dirty_files([path]))
        )

    def history(self, path: Path) -> list[Commit]:
        """Return the commits that touched ``path``, oldest first, with their diffs of it."""
        relative = self.relative(path)
        marker = "\x1e"
        out = self._run(
            "log",
            "--follow",
            "--reverse",
            "-p",
            f"--format={marker}%H{_SEP}%an <%ae>{_SEP}%aI{_SEP}%s",
            "--",
            relative,
        )
        commits = []
        for chunk in out.split(marker)[1:]:
            header, _, diff = chunk.partition("\n")
            sha, author, when, subject = header.split(_SEP, 3)
            commits.append(
                Commit(sha, author, datetime.fromisoformat(when), subject, diff.strip("\n"))
            )
        return commits


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError as exc:
        msg = "git is not installed; steward apply and history need it"
        raise GitError(msg) from exc
    if done.returncode != 0:
        msg = f"git {' '.join(args[:2])} failed in {cwd}: {done.stderr.strip()}"
        raise GitError(msg)
    return done.stdout
