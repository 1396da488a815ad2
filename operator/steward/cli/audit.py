"""``steward audit``: read the audit trail, verify its hash chain, migrate its database."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import click

from steward.config import Settings
from steward.schema.audit import AuditEntry
from steward.services.audit import AuditService
from steward.storage.audit import AuditFilter
from steward.storage.database import ensure_current, make_engine, make_sessionmaker, upgrade

__all__ = ["audit"]

COLUMNS = (
    "id",
    "time",
    "actor",
    "kind",
    "namespace",
    "name",
    "generation",
    "git_commit",
    "git_author",
    "action",
    "target",
    "result",
    "message",
)


def _service(url: str | None, *, check: bool = True) -> AuditService:
    engine = make_engine(url or Settings().database_url)
    if check:
        ensure_current(engine)
    return AuditService(make_sessionmaker(engine))


def _row(entry: AuditEntry) -> dict[str, object]:
    row: dict[str, object] = {c: getattr(entry, c) for c in COLUMNS}
    row["time"] = entry.time.isoformat()
    return row


def format_entries(entries: list[AuditEntry], output: str) -> str:
    """Render rows as text (one line each), JSON (with before/after) or CSV."""
    if output == "json":
        rows = []
        for entry in entries:
            row = _row(entry)
            row["before"] = json.loads(entry.before) if entry.before else None
            row["after"] = json.loads(entry.after) if entry.after else None
            row["hash"] = entry.hash
            rows.append(row)
        return json.dumps(rows, indent=2)
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(_row(e) for e in entries)
        return buffer.getvalue().rstrip("\n")
    lines = []
    for e in entries:
        resource = f"{e.kind}/{e.namespace + '/' if e.namespace else ''}{e.name}"
        origin = f" commit={e.git_commit[:12]} author={e.git_author}" if e.git_commit else ""
        gen = f" gen={e.generation}" if e.generation is not None else ""
        target = f" target={e.target}" if e.target else ""
        lines.append(
            f"{e.id:>6} {e.time.isoformat(timespec='seconds')} {e.actor} {e.action} "
            f"{resource}{gen}{target} {e.result}{origin}" + (f": {e.message}" if e.message else "")
        )
    return "\n".join(lines)


@click.group()
@click.option("--database-url", envvar="STEWARD_DATABASE_URL", help="Audit database URL.")
@click.pass_context
def audit(ctx: click.Context, database_url: str | None) -> None:
    """Read and check the audit trail of every external action and every apply."""
    ctx.obj = database_url


@audit.command("log")
@click.option("--kind")
@click.option("--namespace")
@click.option("--name")
@click.option("--actor")
@click.option("--action")
@click.option("--since", type=click.DateTime(), help="Rows at or after this time (UTC).")
@click.option("--until", type=click.DateTime(), help="Rows before this time (UTC).")
@click.option("--limit", type=int)
@click.option("--format", "output", type=click.Choice(["text", "json", "csv"]), default="text")
@click.pass_obj
def log(
    url: str | None,
    /,
    output: str,
    limit: int | None,
    since: datetime | None,
    until: datetime | None,
    **filters: str | None,
) -> None:
    """Show audit rows, oldest first, filtered."""
    where = AuditFilter(since=since, until=until, **filters)
    entries = _service(url).query(where, limit)
    click.echo(format_entries(entries, output))


@audit.command()
@click.pass_obj
def verify(url: str | None) -> None:
    """Verify the hash chain; exit 1 naming every row that was edited, inserted or deleted."""
    service = _service(url)
    findings = service.verify()
    for finding in findings:
        click.echo(f"row {finding.entry_id}: {finding.problem}", err=True)
    if findings:
        raise SystemExit(1)
    seq, head = service.head()
    click.echo(f"audit trail intact: {seq} rows, head {head}")


@audit.command("upgrade")
@click.pass_obj
def upgrade_command(url: str | None) -> None:
    """Create or migrate the audit database to this Steward's schema."""
    engine = make_engine(url or Settings().database_url)
    upgrade(engine)
    click.echo(f"audit database {engine.url.render_as_string(hide_password=True)} is current")
