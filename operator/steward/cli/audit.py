"""``steward audit``: read the trail, verify it against signed checkpoints, export, migrate.

``verify`` trusts what is outside the database: the checkpoints an auditor exported
(``--checkpoint FILE``) or the operator's witness ConfigMap (``--from-cluster``), each checked
against a public key that does not come from the database either.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from steward.exceptions import ConfigurationError, StewardError
from steward.factory import CommandContext
from steward.schema.audit import AuditEntry
from steward.services.checkpoint import Checkpoint, PublicKey, SigningKey, verify_trail
from steward.storage.audit import AuditFilter
from steward.storage.database import upgrade
from steward.storage.files import write_atomic, write_private

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


_kubeconfig = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="Cluster of the operator (default: $KUBECONFIG, then in-cluster).",
)
_from_cluster = click.option(
    "--from-cluster",
    is_flag=True,
    help="Use the checkpoints and public key the operator keeps in its namespace's ConfigMaps.",
)


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
    with CommandContext(database_url=url) as context:
        entries = context.audit().query(where, limit)
    click.echo(format_entries(entries, output))


def _read_export(path: Path) -> tuple[list[PublicKey], list[Checkpoint]]:
    """The public keys and checkpoints of an export file.

    Raises
    ------
    click.ClickException
        The file cannot be read or is not an export, naming the file and the problem.
    """
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        checkpoints = [Checkpoint.from_json(item) for item in data["checkpoints"]]
        pems = [data["publicKey"]] if data.get("publicKey") else []
        pems += list(data.get("publicKeys") or [])
    except (OSError, ValueError, KeyError, TypeError) as error:
        msg = f"{path}: not a checkpoint export ({error})"
        raise click.ClickException(msg) from None
    return _distinct_keys(PublicKey.from_pem(pem, source=f"{path}") for pem in pems), checkpoints


def _distinct_keys(keys: Iterable[PublicKey]) -> list[PublicKey]:
    found: dict[str, PublicKey] = {}
    for key in keys:
        found.setdefault(key.key_id, key)
    return list(found.values())


def _trusted_keys(
    context: CommandContext,
    public_keys: tuple[Path, ...],
    files: list[list[PublicKey]],
    *,
    cluster: bool,
) -> tuple[list[PublicKey], str]:
    """The keys to believe, and where they came from: never from the audit database."""
    if public_keys:
        pinned = (PublicKey.from_pem(p.read_bytes(), source=str(p)) for p in public_keys)
        return _distinct_keys(pinned), ", ".join(map(str, public_keys))
    from_files = _distinct_keys(key for keys in files for key in keys)
    if from_files:
        return from_files, "the checkpoint file"
    if cluster:
        published = context.witness().public_keys()
        if published:
            return published, "the cluster's ConfigMap"
    signing = context.signing_key()
    if signing is not None:
        return [signing.public()], "the configured signing key"
    return [], ""


@audit.command()
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Checkpoints exported earlier (steward audit checkpoint --export); repeatable.",
)
@_from_cluster
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A public key to trust (steward audit key), repeatable (after a change of key); "
    "else the file's, the cluster's, the configured one.",
)
@_kubeconfig
@click.pass_obj
def verify(
    url: str | None,
    checkpoint_files: tuple[Path, ...],
    public_keys: tuple[Path, ...],
    kubeconfig: Path | None,
    *,
    from_cluster: bool,
) -> None:
    """Verify the hash chain and the signed checkpoints; exit 1 naming the first bad row.

    Every checkpoint's signature is checked, that checkpoints chain, and that the trail still
    reaches and matches every checkpoint, so a deleted tail (even with the chain's head
    rewound) or a trail rewritten with recomputed hashes is caught.
    """
    with CommandContext(database_url=url, kubeconfig=kubeconfig) as context:
        service = context.audit()
        exports = [_read_export(path) for path in checkpoint_files]
        checkpoints = [c for _key, found in exports for c in found]
        checkpoints += [Checkpoint.from_row(row) for row in service.checkpoints()]
        unreadable: list[str] = []
        if from_cluster:
            witnessed, unreadable = context.witness().read()
            checkpoints += witnessed
        keys, source = _trusted_keys(
            context, public_keys, [k for k, _found in exports], cluster=from_cluster
        )
        result = verify_trail(service, checkpoints, keys)
    for problem in unreadable:
        click.echo(f"unreadable checkpoint: {problem}", err=True)
    for finding in result.findings:
        click.echo(str(finding), err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.findings or unreadable:
        first = min((f.entry_id for f in result.findings if f.entry_id is not None), default=None)
        if first is not None:
            click.echo(f"first bad row: {first}", err=True)
        raise SystemExit(1)
    summary = f"audit trail intact: {result.rows} rows, head {result.head}"
    if result.checked:
        newest = result.checked[-1]
        summary += (
            f"; {len(result.checked)} signed checkpoints verified with key {newest.key_id} "
            f"(from {source}), the newest #{newest.number} at row {newest.seq}, signed "
            f"{newest.time.isoformat(timespec='seconds')}"
        )
    click.echo(summary)


@audit.command()
@click.option(
    "--export",
    "export",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write (or add to) this file: the public key and every checkpoint, for safekeeping.",
)
@_from_cluster
@_kubeconfig
@click.pass_obj
def checkpoint(
    url: str | None, export: Path | None, kubeconfig: Path | None, *, from_cluster: bool
) -> None:
    """List the signed checkpoints, or export them so an auditor keeps copies.

    Without --from-cluster they come from the audit database (and the public key from the
    cluster's ConfigMap or the configured key); an export into an existing file keeps the
    checkpoints it had, so older ones the cluster no longer holds are not lost.
    """
    with CommandContext(database_url=url, kubeconfig=kubeconfig) as context:
        if from_cluster:
            found, problems = context.witness().read()
            for problem in problems:
                click.echo(f"unreadable checkpoint: {problem}", err=True)
        else:
            found = [Checkpoint.from_row(row) for row in context.audit().checkpoints()]
        if export is not None:
            _export(export, _export_key(context, from_cluster=from_cluster), found)
            return
    for item in sorted(found, key=lambda c: c.number):
        click.echo(
            f"{item.number:>6} {item.time.isoformat(timespec='seconds')} rows={item.seq} "
            f"head={item.head} key={item.key_id}"
        )


def _export_key(context: CommandContext, *, from_cluster: bool) -> PublicKey | None:
    """The key an export carries: the cluster's, or the configured one (then the cluster's)."""
    if not from_cluster:
        signing = context.signing_key()
        if signing is not None:
            return signing.public()
    try:
        return context.witness().public_key()
    except StewardError:
        if from_cluster:
            raise
        return None


def _export(path: Path, key: PublicKey | None, found: list[Checkpoint]) -> None:
    kept: list[Checkpoint] = []
    keys = [key] if key is not None else []
    if path.exists():
        old_keys, kept = _read_export(path)
        keys = _distinct_keys([*keys, *old_keys])
    if not keys:
        msg = "no public key to export with the checkpoints: give the cluster or a signing key"
        raise click.ClickException(msg)
    by_number = {c.number: c for c in kept}
    added = [c for c in found if c.number not in by_number]
    by_number.update((c.number, c) for c in added)
    document = {
        "publicKey": keys[0].pem(),
        "keyId": keys[0].key_id,
        "publicKeys": [k.pem() for k in keys],
        "checkpoints": [by_number[n].to_json() for n in sorted(by_number)],
    }
    write_atomic(path, json.dumps(document, indent=2) + "\n")
    click.echo(f"{path}: {len(by_number)} checkpoints ({len(added)} new), key {keys[0].key_id}")


@audit.command()
@click.option(
    "--generate",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a new signing key to this file (mode 0600) and show its public key.",
)
@_from_cluster
@_kubeconfig
@click.pass_obj
def key(
    url: str | None, generate: Path | None, kubeconfig: Path | None, *, from_cluster: bool
) -> None:
    """Show the public key that verifies checkpoints (PEM; its id on stderr)."""
    del url  # the key never comes from the database
    if generate is not None:
        if generate.exists():
            msg = f"{generate} exists; not overwriting a key"
            raise click.ClickException(msg)
        signing = SigningKey.generate()
        write_private(generate, signing.pem())
        public: PublicKey | None = signing.public()
    else:
        with CommandContext(kubeconfig=kubeconfig) as context:
            if from_cluster:
                public = context.witness().public_key()
            else:
                configured = context.signing_key()
                public = configured.public() if configured is not None else None
    if public is None:
        msg = (
            "no key: set STEWARD_AUDIT_SIGNING_KEY_FILE or _SECRET, or use --from-cluster"
            if not from_cluster
            else "the cluster publishes no audit key (is the operator running with one?)"
        )
        raise ConfigurationError(msg)
    click.echo(public.pem(), nl=False)
    click.echo(f"key id {public.key_id}", err=True)


@audit.command("upgrade")
@click.pass_obj
def upgrade_command(url: str | None) -> None:
    """Create or migrate the audit database to this Steward's schema."""
    with CommandContext(database_url=url) as context:
        engine = context.engine(check=False)
        upgrade(engine)
        shown = engine.url.render_as_string(hide_password=True)
    click.echo(f"audit database {shown} is current")
