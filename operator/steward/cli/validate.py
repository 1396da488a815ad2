"""``steward validate``: schema and cross-file checks of policies/ and sites/."""

from __future__ import annotations

import json
from pathlib import Path

import click

from steward.services.validation import validate_paths

__all__ = ["validate"]

DEFAULT_PATHS = (Path("policies"), Path("sites"))


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one `path:line:column: Kind/name: message` line per problem.",
)
@click.option(
    "--sites",
    "sites_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sites"),
    show_default=True,
    help="Site declarations to check references against when PATHS contain none.",
)
def validate(paths: tuple[Path, ...], output: str, sites_dir: Path) -> None:
    """Validate policy and site files (default: policies/ and sites/); exit 1 on any error."""
    targets = list(paths) or [p for p in DEFAULT_PATHS if p.exists()]
    if not targets:
        raise click.UsageError("no PATHS given and neither policies/ nor sites/ exists here")
    result = validate_paths(targets, sites_dir if sites_dir.is_dir() else None)
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "files": result.files,
                    "resources": len(result.resources),
                    "problems": [p.to_json() for p in result.problems],
                },
                indent=2,
            )
        )
    else:
        for problem in result.problems:
            click.echo(problem.format())
        summary = (
            f"{result.files} files, {len(result.resources)} resources, "
            f"{len(result.problems)} problems"
        )
        click.echo(summary, err=True)
    if not result.ok:
        raise SystemExit(1)
