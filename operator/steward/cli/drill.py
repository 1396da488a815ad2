"""``steward drill``: a disaster-recovery drill of a custodial tape RSE (use case 22).

Meant for a Kubernetes CronJob (docs/operations.md has one): exit 0 when every sampled file was
recalled and read back intact (and its metrics were pushed, when asked), 1 otherwise, so a
failed drill is a failed Job.
"""

from __future__ import annotations

import json
from datetime import timedelta

import click
from prometheus_client import push_to_gateway

from steward.cli._options import command_context, meta_option
from steward.models.common import parse_duration
from steward.services.drill import DrillRequest, drill_metrics

__all__ = ["drill"]


def _duration(_ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param=param) from error


@click.command()
@click.option("--scope", required=True, help="Scope to sample datasets from.")
@meta_option("Metadata the sampled datasets must have.")
@click.option("--tape", required=True, help="Custodial TAPE RSE whose copies are tested.")
@click.option("--scratch", required=True, help="DISK RSE to recall to.")
@click.option("--files", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--lifetime", default="6h", show_default=True, callback=_duration)
@click.option("--timeout", default="4h", show_default=True, callback=_duration)
@click.option("--poll", default="30s", show_default=True, callback=_duration)
@click.option("--seed", type=int, help="Seed of the sample, to repeat one (reported).")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text")
@click.option(
    "--pushgateway", metavar="URL", help="Push the drill's metrics to this Prometheus Pushgateway."
)
def drill(
    *,
    scope: str,
    meta: dict[str, str],
    tape: str,
    scratch: str,
    files: int,
    lifetime: timedelta,
    timeout: timedelta,
    poll: timedelta,
    seed: int | None,
    output: str,
    pushgateway: str | None,
) -> None:
    """Recall a sample of tape-only files, verify their checksums, report, release the rules."""
    request = DrillRequest(
        scope=scope,
        tape=tape,
        scratch=scratch,
        files=files,
        match=meta,
        lifetime=lifetime,
        timeout=timeout,
        poll=poll,
        seed=seed,
    )
    with command_context("drill") as context:
        report = context.drill().run(request)
    if output == "json":
        click.echo(json.dumps(report.to_json()))
    else:
        click.echo("\n".join(report.lines()))
    pushed = True
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job="steward-drill", registry=drill_metrics(report))
        except OSError as error:  # the drill's result stands; the Job fails so it is seen
            click.echo(f"could not push the drill's metrics to {pushgateway}: {error}", err=True)
            pushed = False
    if not report.passed or not pushed:
        raise SystemExit(1)
