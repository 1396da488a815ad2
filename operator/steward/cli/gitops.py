"""``steward plan`` and ``steward apply``: from the policy repository to the cluster.

``plan`` exits 0 when nothing would change, 2 when changes are pending and 1 on error (the API
server would refuse a change, or ``--require-rucio`` and Rucio was not consulted), like
``terraform plan -detailed-exitcode``, so a policy repository's CI can gate merges on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from steward.cli.validate import DEFAULT_PATHS
from steward.factory import CommandContext
from steward.services.gitops import (
    Action,
    DestructiveRefused,
    Plan,
    PlanRefused,
    PruneRefused,
)
from steward.services.plan import RucioStatus
from steward.services.validation import ValidationResult, validate_paths

__all__ = ["apply", "format_plan", "plan"]

_SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.PRUNE: "-", Action.UNCHANGED: "="}


def format_plan(plan: Plan, rucio: RucioStatus | None = None) -> str:
    """Render a plan for people: destructive lines and refusals stand out."""
    lines = []
    for change in plan.pending:
        marker = "  !! DESTRUCTIVE" if change.destructive else ""
        marker += "  !! REFUSED" if change.refused else ""
        lines.append(f"{_SYMBOL[change.action]} {change.action.value} {change.key}{marker}")
        lines.extend(f"    {line}" for line in change.diff)
        lines.extend(f"    !! {reason}" for reason in change.destructive)
        if change.refused:
            lines.append(f"    !! the API server refuses it: {change.refused}")
        lines.extend(f"    -> {line}" for line in change.consequences)
    counts = dict.fromkeys(Action, 0)
    for change in plan.changes:
        counts[change.action] += 1
    destructive = len(plan.destructive)
    lines.append(
        f"Plan: {counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to update, "
        f"{counts[Action.PRUNE]} to prune, {counts[Action.UNCHANGED]} unchanged"
        + (f"; {destructive} destructive" if destructive else "")
        + (f"; {len(plan.refused)} refused" if plan.refused else "")
        + "."
    )
    if rucio is not None:
        lines.append(rucio.line())
    return "\n".join(lines)


def _validated(paths: tuple[Path, ...]) -> tuple[list[Path], ValidationResult]:
    targets = list(paths) or [p for p in DEFAULT_PATHS if p.exists()]
    sites = Path("sites")
    result = validate_paths(targets, sites if sites.is_dir() else None)
    if not result.ok:
        for problem in result.problems:
            click.echo(problem.format(), err=True)
        msg = f"{len(result.problems)} validation problems; nothing was planned or applied"
        raise click.ClickException(msg)
    return targets, result


_kubeconfig = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="Cluster to plan against (default: $KUBECONFIG, then in-cluster).",
)
_prune = click.option("--prune", is_flag=True, help="Also delete what was removed from git.")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_kubeconfig
@_prune
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--require-rucio",
    is_flag=True,
    help="Fail (exit 1) when Rucio is not configured or does not answer, instead of "
    "planning the Kubernetes side only.",
)
def plan(
    paths: tuple[Path, ...],
    kubeconfig: Path | None,
    output: str,
    *,
    prune: bool,
    require_rucio: bool,
) -> None:
    """Show what apply would change in the cluster and in Rucio; exit 0 none, 2 pending, 1 error."""
    targets, result = _validated(paths)
    with CommandContext(kubeconfig=kubeconfig) as context:
        planner = context.rucio_planner()
        service = context.gitops(targets[0], audit=False, consequences=planner.estimate)
        planned = service.plan(result, prune=prune, scope=targets)
    if output == "json":
        report = {
            "pending": len(planned.pending),
            "destructive": len(planned.destructive),
            "refused": len(planned.refused),
            "rucio": planner.status.to_json(),
            "changes": [c.to_json() for c in planned.pending],
        }
        click.echo(json.dumps(report))
    else:
        click.echo(format_plan(planned, planner.status))
    if planned.refused:
        msg = f"the API server refuses {len(planned.refused)} of the changes (see above)"
        raise click.ClickException(msg)
    if require_rucio and not planner.status.consulted:
        msg = f"Rucio was not consulted ({planner.status.reason}) and --require-rucio was given"
        raise click.ClickException(msg)
    if planned.pending:
        raise SystemExit(2)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_kubeconfig
@_prune
@click.option(
    "--allow-dirty",
    is_flag=True,
    help="Apply files with uncommitted changes (marked dirty in annotations and the audit).",
)
@click.option(
    "--allow-destructive",
    is_flag=True,
    help="Carry out what the plan marks DESTRUCTIVE (prunes, moves, fewer copies...); the "
    "audit rows name who allowed it.",
)
@click.option(
    "--max-prune-fraction",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="Largest share of managed resources one prune may delete.",
)
@click.option("--database-url", envvar="STEWARD_DATABASE_URL", help="Audit database URL.")
def apply(
    paths: tuple[Path, ...],
    kubeconfig: Path | None,
    max_prune_fraction: float,
    database_url: str | None,
    *,
    prune: bool,
    allow_dirty: bool,
    allow_destructive: bool,
) -> None:
    """Server-side apply PATHS with git provenance; prune only with --prune."""
    targets, result = _validated(paths)
    with CommandContext(database_url=database_url, kubeconfig=kubeconfig) as context:
        planner = context.rucio_planner()
        service = context.gitops(
            targets[0], audit=True, consequences=planner.estimate, progress=click.echo
        )
        dirty = service.repo.dirty_files(targets)
        listed = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")  # noqa: PLR2004
        if dirty and not allow_dirty:
            msg = (
                f"uncommitted changes in {listed}: commit them so every resource carries the "
                "commit it came from, or pass --allow-dirty"
            )
            raise click.ClickException(msg)
        if dirty:
            click.echo(f"applying uncommitted changes in {listed}: marked dirty", err=True)
        planned = service.plan(result, prune=prune, scope=targets)
        click.echo(format_plan(planned, planner.status))
        try:
            service.apply(
                planned,
                max_prune_fraction=max_prune_fraction,
                allow_destructive=allow_destructive,
            )
        except (PlanRefused, DestructiveRefused, PruneRefused) as exc:
            raise click.ClickException(f"{exc}; nothing was applied") from exc
