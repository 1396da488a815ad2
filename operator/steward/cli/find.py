"""``steward find``: data by metadata through Rucio, with its replicas and its rules' owners."""

from __future__ import annotations

import json
from pathlib import Path

import click

from steward.cli._options import command_context, kubeconfig_option, meta_option
from steward.services.find import DEFAULT_PAGE_SIZE, FindQuery, Found

__all__ = ["find", "format_found"]


def format_found(found: Found) -> list[str]:
    """Lines for one result: the DID, then its replicas and rules, indented."""
    size = f"{found.bytes} bytes" if found.bytes is not None else "size unknown"
    files = f"{found.files} files, " if found.files is not None else ""
    lines = [f"{found.did}  {found.type.lower()}  {files}{size}"]
    lines += [
        f"  replica {r.rse}: {r.available_files}/{r.files} files available ({r.state})"
        for r in found.replicas
    ] or ["  no replicas"]
    lines += [
        f"  rule {rule.id} {rule.state.value} -> {rule.rse_expression}  "
        f"owner {rule.describe_owner()}"
        for rule in found.rules
    ] or ["  no rules"]
    return lines


@click.command()
@click.option("--scope", "scopes", multiple=True, help="Scope to search (repeatable; all if none).")
@meta_option("Metadata the data must have, e.g. --meta datatype=raw --meta visit=42.")
@click.option("--rse", "rse_expression", help="Only data with a replica on RSEs this selects.")
@click.option(
    "--type",
    "did_type",
    type=click.Choice(["dataset", "file"]),
    default="dataset",
    show_default=True,
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, written as each result is found.",
)
@click.option(
    "--owners/--no-owners",
    default=True,
    show_default=True,
    help="Name the Steward resources owning each rule (reads the cluster).",
)
@click.option("--page-size", type=click.IntRange(1, 10_000), default=DEFAULT_PAGE_SIZE)
@kubeconfig_option
def find(
    *,
    scopes: tuple[str, ...],
    meta: dict[str, str],
    rse_expression: str | None,
    did_type: str,
    output: str,
    page_size: int,
    kubeconfig: Path | None,
    owners: bool,
) -> None:
    """Find data by metadata; show where it is and which Steward resources keep it there.

    Results stream: the first appear after one page of lookups, however many match.
    """
    query = FindQuery(
        scopes=scopes or None,
        match=meta,
        rse_expression=rse_expression,
        did_type="file" if did_type == "file" else "dataset",
    )
    with command_context("find", kubeconfig) as context:
        service = context.find(owners=owners, page_size=page_size)
        for found in service.find(query):
            if output == "json":
                click.echo(json.dumps(found.to_json()))
            else:
                click.echo("\n".join(format_found(found)))
        stats = service.stats
        click.echo(
            f"{stats.found} found ({stats.listed} matching the metadata, {stats.pages} pages)",
            err=True,
        )
