"""``steward ingest``: register external files as replicas on an RSE, in a dataset, with metadata.

Without ``--apply`` it only plans: what would be registered, where the RSE expects the bytes,
and any conflict. Exit codes as ``steward plan``: 0 nothing to do, 2 changes pending (dry run),
1 error or conflict.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from steward.cli._options import command_context, meta_option
from steward.services.ingest import DEFAULT_BATCH_SIZE, IngestRequest

__all__ = ["ingest"]


@click.command()
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--scope", required=True, help="Rucio scope of the files and the dataset.")
@click.option("--rse", required=True, help="RSE where the files already are.")
@meta_option("Metadata of the dataset and the files, e.g. --meta datatype=efd_annex.")
@click.option(
    "--dataset",
    help="Dataset (NAME or SCOPE:NAME) to attach the files to; derived from the files if absent.",
)
@click.option("--apply", "apply_", is_flag=True, help="Register; without it, only show the plan.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=DEFAULT_BATCH_SIZE)
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text")
def ingest(
    *,
    paths: tuple[Path, ...],
    scope: str,
    rse: str,
    meta: dict[str, str],
    dataset: str | None,
    batch_size: int,
    output: str,
    apply_: bool,
) -> None:
    """Register PATHS (files already on the RSE) in Rucio; plan first, --apply to act.

    Checksums (Adler-32, MD5) and sizes are computed from the local files. Running the same
    command again after a failure completes the ingest; nothing is registered twice.
    """
    request = IngestRequest(paths=paths, scope=scope, rse=rse, meta=meta, dataset=dataset)
    with command_context("ingest") as context:
        service = context.ingest(batch_size=batch_size)
        plan = service.plan(request)
        if output == "json":
            click.echo(json.dumps(plan.to_json()))
        else:
            click.echo("\n".join(plan.lines()))
        if plan.conflicts:
            msg = f"{len(plan.conflicts)} conflicts; nothing was ingested"
            raise click.ClickException(msg)
        if not plan.pending:
            return
        if not apply_:
            click.echo("dry run: nothing was registered; run again with --apply", err=True)
            raise SystemExit(2)
        result = service.apply(plan, progress=lambda line: click.echo(line, err=True))
        click.echo(
            f"ingested {plan.dataset}: {result.registered} registered, "
            f"{result.attached} attached, {len(result.metadata)} metadata keys set",
            err=True,
        )
