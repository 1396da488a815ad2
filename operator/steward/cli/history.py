"""``steward history KIND/NAME``: git history of a policy interleaved with the engine's actions."""

from __future__ import annotations

from pathlib import Path

import click

from steward.cli.validate import DEFAULT_PATHS
from steward.factory import CommandContext
from steward.models import KINDS
from steward.services.gitops import DIRTY_SUFFIX
from steward.services.history import Event

__all__ = ["history"]


def _kind(text: str) -> str:
    for info in KINDS:
        if text.lower() in {info.kind.lower(), info.plural, info.singular, *info.short_names}:
            return info.kind
    known = ", ".join(i.kind for i in KINDS)
    raise click.BadParameter(f"unknown kind {text!r}; one of {known}")


def format_event(event: Event, *, diffs: bool) -> list[str]:
    """Lines for one event."""
    when = event.time.isoformat(timespec="seconds")
    if event.commit is not None:
        c = event.commit
        lines = [f"{when}  commit {c.sha[:12]}  {c.author}  {c.subject}"]
        if diffs:
            lines.extend(f"    {line}" for line in c.diff.splitlines() if line)
        return lines
    e = event.entry
    assert e is not None  # noqa: S101 - an event is a commit or an entry
    origin = f" from {e.git_commit[:12]}" if e.git_commit else ""
    if e.git_commit and e.git_commit.endswith(DIRTY_SUFFIX):
        base = e.git_commit.removesuffix(DIRTY_SUFFIX)
        origin = f" from {base[:12]} with uncommitted changes (dirty)"
    gen = f" gen {e.generation}" if e.generation is not None else ""
    target = f" {e.target}" if e.target else ""
    message = f": {e.message}" if e.message else ""
    return [f"{when}  #{e.id} {e.actor} {e.action}{target}{gen}{origin} -> {e.result}{message}"]


@click.command()
@click.argument("resource", metavar="KIND/NAME")
@click.option("-n", "--namespace", help="Namespace of the resource (namespaced kinds).")
@click.option("--paths", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("--no-diff", is_flag=True, help="Omit the commits' diffs.")
@click.option("--database-url", envvar="STEWARD_DATABASE_URL", help="Audit database URL.")
def history(
    resource: str,
    namespace: str | None,
    paths: tuple[Path, ...],
    database_url: str | None,
    *,
    no_diff: bool,
) -> None:
    """Show who changed KIND/NAME, when, from which commit, and what the engine did."""
    kind_text, _, name = resource.partition("/")
    if not name:
        raise click.BadParameter("expected KIND/NAME, e.g. rr/raw-to-in2p3", param_hint="KIND/NAME")
    kind = _kind(kind_text)
    targets = list(paths) or [p for p in DEFAULT_PATHS if p.exists()]
    with CommandContext(database_url=database_url) as context:
        events = context.history(Path.cwd()).events(kind, name, targets, namespace)
    if not events:
        raise click.ClickException(f"no history for {kind}/{name}")
    for event in events:
        for line in format_event(event, diffs=not no_diff):
            click.echo(line)
