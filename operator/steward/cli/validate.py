"""``steward validate``: schema and cross-file checks of policies/ and sites/."""

from __future__ import annotations

import json
from pathlib import Path

import click

from steward.services.validation import Problem, validate_paths

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
@click.option(
    "--reference",
    "reference",
    type=click.Path(path_type=Path),
    multiple=True,
    default=(Path("policies"),),
    show_default=True,
    help="Other policies the checks may refer to when PATHS do not include them: the Campaign "
    "a retention policy names, rules that keep data without lifetime, rule conflicts, names. "
    "Their own problems are not reported.",
)
def validate(
    paths: tuple[Path, ...], output: str, sites_dir: Path, reference: tuple[Path, ...]
) -> None:
    """Validate policy and site files (default: policies/ and sites/); exit 1 on any error.

    Warnings (an empty file, an unquoted key YAML reads as a boolean) are printed but do not
    fail the run.
    """
    targets = list(paths) or [p for p in DEFAULT_PATHS if p.exists()]
    if not targets:
        raise click.UsageError("no PATHS given and neither policies/ nor sites/ exists here")
    result = validate_paths(
        targets,
        sites_dir if sites_dir.is_dir() else None,
        reference=[p for p in reference if p.exists()],
    )
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "files": result.files,
                    "resources": len(result.resources),
                    "problems": [p.to_json() for p in result.problems],
                    "warnings": [p.to_json() for p in result.warnings],
                },
                indent=2,
            )
        )
    else:
        for problem in sorted([*result.problems, *result.warnings], key=_order):
            click.echo(problem.format())
        summary = (
            f"{result.files} files, {len(result.resources)} resources, "
            f"{len(result.problems)} problems, {len(result.warnings)} warnings"
        )
        click.echo(summary, err=True)
    if not result.ok:
        raise SystemExit(1)


def _order(problem: Problem) -> tuple[str, int, int]:
    return (str(problem.path or ""), problem.line or 0, problem.column or 0)
