"""``steward plan`` and ``steward apply``: from the policy repository to the cluster.

``plan`` exits 0 when nothing would change, 2 when changes are pending and 1 on error, like
``terraform plan -detailed-exitcode``, so a policy repository's CI can gate merges on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from steward.cli.validate import DEFAULT_PATHS
from steward.config import Settings
from steward.services.audit import AuditService
from steward.services.gitops import (
    Action,
    Change,
    ConsequenceEstimator,
    GitOpsService,
    Plan,
    PruneRefused,
)
from steward.services.replication import ReplicationPreview
from steward.services.validation import ValidationResult, validate_paths
from steward.storage.database import ensure_current, make_engine, make_sessionmaker
from steward.storage.kubernetes import ApiClient, KubeResources, api_client, cluster_identity
from steward.storage.repo import GitRepo
from steward.storage.rucio import RucioStorage

__all__ = ["apply", "format_plan", "plan"]

_SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.PRUNE: "-", Action.UNCHANGED: "="}


def format_plan(plan: Plan) -> str:
    """Render a plan for people: destructive lines stand out."""
    lines = []
    for change in plan.pending:
        marker = "  !! DESTRUCTIVE" if change.destructive else ""
        lines.append(f"{_SYMBOL[change.action]} {change.action.value} {change.key}{marker}")
        lines.extend(f"    {line}" for line in change.diff)
        lines.extend(f"    !! {reason}" for reason in change.destructive)
        lines.extend(f"    -> {line}" for line in change.consequences)
    counts = dict.fromkeys(Action, 0)
    for change in plan.changes:
        counts[change.action] += 1
    destructive = sum(1 for c in plan.changes if c.destructive)
    lines.append(
        f"Plan: {counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to update, "
        f"{counts[Action.PRUNE]} to prune, {counts[Action.UNCHANGED]} unchanged"
        + (f"; {destructive} destructive" if destructive else "")
        + "."
    )
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


def _rucio_consequences(kube: ApiClient) -> ConsequenceEstimator | None:
    """Rucio-side consequences of a plan, when Rucio is configured (settings or RUCIO_CONFIG).

    Owner tags name the cluster, so the cluster's identity is read as the operator reads it.
    """
    settings = Settings()
    if settings.rucio_host is None and "RUCIO_CONFIG" not in os.environ:
        return None
    cluster_id = settings.cluster_id or cluster_identity(kube)
    preview = ReplicationPreview(RucioStorage(settings), cluster_id=cluster_id)

    def estimate(change: Change) -> list[str]:
        if change.key.kind != "ReplicationRule" or change.key.namespace is None:
            return []
        desired = None if change.action is Action.PRUNE else change.desired
        return preview.consequences(change.key.namespace, change.key.name, desired, change.live)

    return estimate


def _service(
    kubeconfig: Path | None, targets: list[Path], audit: AuditService | None
) -> GitOpsService:
    repo = GitRepo.find(targets[0].resolve())
    api = api_client(kubeconfig)
    kube = KubeResources(api)
    return GitOpsService(
        kube=kube,
        repo=repo,
        audit=audit,
        consequences=_rucio_consequences(api),
        progress=click.echo,
    )


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
def plan(paths: tuple[Path, ...], kubeconfig: Path | None, output: str, *, prune: bool) -> None:
    """Show what apply would change; exit 0 none, 2 pending, 1 error."""
    targets, result = _validated(paths)
    service = _service(kubeconfig, targets, None)
    planned = service.plan(result, prune=prune, scope=targets)
    if output == "json":
        changes: list[Change] = planned.pending
        click.echo(json.dumps({"pending": len(changes), "changes": [c.to_json() for c in changes]}))
    else:
        click.echo(format_plan(planned))
    if planned.pending:
        raise SystemExit(2)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_kubeconfig
@_prune
@click.option("--allow-dirty", is_flag=True, help="Apply files with uncommitted changes.")
@click.option("--allow-destructive", is_flag=True, help="Prune more than --max-prune-fraction.")
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
    engine = make_engine(database_url or Settings().database_url)
    ensure_current(engine)
    audit = AuditService(make_sessionmaker(engine))
    service = _service(kubeconfig, targets, audit)
    dirty = service.repo.dirty_files(targets)
    if dirty and not allow_dirty:
        listed = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")  # noqa: PLR2004
        msg = (
            f"uncommitted changes in {listed}: commit them so every resource carries the commit "
            "it came from, or pass --allow-dirty"
        )
        raise click.ClickException(msg)
    planned = service.plan(result, prune=prune, scope=targets)
    click.echo(format_plan(planned))
    try:
        service.apply(
            planned,
            max_prune_fraction=max_prune_fraction,
            allow_destructive=allow_destructive,
        )
    except PruneRefused as exc:
        raise click.ClickException(f"{exc}; nothing was applied") from exc
    engine.dispose()
