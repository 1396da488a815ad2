"""``steward report`` and ``steward provenance``: what ran, where, why it failed, what it made.

Read from the campaign ledger (the audit store's database), like ``bps report`` reads
HTCondor's: use cases 8-11, 15 and 16 of the operations list.
"""

from __future__ import annotations

import json
from typing import Any

import click

from steward.factory import CommandContext
from steward.models.campaign import format_memory
from steward.services.ledger import InvocationRecord, Report

__all__ = ["provenance", "report"]

_DATABASE = click.option(
    "--database-url", envvar="STEWARD_DATABASE_URL", help="Audit (and ledger) database URL."
)
_FORMAT = click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
_NAMESPACE = click.option("-n", "--namespace", help="Namespace of the campaign.")


def _dump(value: Any) -> str:  # noqa: ANN401 - any JSON value
    return json.dumps(value, indent=2, sort_keys=False)


def _spread(stats: dict[str, float] | None, unit: str = "s") -> str:
    if stats is None:
        return "-"
    if unit == "bytes":
        return " ".join(f"{k}={format_memory(int(v))}" for k, v in stats.items())
    return " ".join(f"{k}={v:.0f}{unit}" for k, v in stats.items())


def format_report(report: Report) -> str:
    """The report as text: per step, then failures by class, then nodes by failures."""
    ref = report.campaign
    lines = [
        f"campaign {ref.namespace}/{ref.name} (uid {ref.uid}) at site {report.site}: "
        f"{report.invocations} invocations per step"
        + (f", {report.outcome}" if report.outcome else "")
        + (f", outputs held for review ({report.review})" if report.review else ""),
        "",
        f"{'STEP':<16} {'STATES':<44} RUNTIME",
    ]
    for step in report.steps:
        states = " ".join(f"{k}={v}" for k, v in step["states"].items())
        lines.append(f"{step['name']:<16} {states:<44} {_spread(step['runtimeSeconds'])}")
        attempts = " ".join(f"{k}={v}" for k, v in step["attempts"].items())
        lines.append(f"{'':<16} attempts: {attempts}")
        memory = _spread(step["memoryRequested"], "bytes")
        lines.append(
            f"{'':<16} memory requested: {memory}; raised for {step['memoryRaised']} invocations"
        )
    lines += ["", "FAILURES BY CLASS"]
    lines += [f"  {k}: {v}" for k, v in report.failures.items()] or ["  none"]
    lines += ["", "NODES (most failures first)"]
    for node in report.nodes:
        failures = " ".join(f"{k}={v}" for k, v in node["failures"].items()) or "no failures"
        lines.append(f"  {node['node']}: {node['attempts']} attempts, {failures}")
    return "\n".join(lines)


def format_invocation(record: InvocationRecord) -> list[str]:
    """Lines for one invocation: where it ran, what it read and wrote."""
    data_id = json.dumps(record.data_id, sort_keys=True)
    where = f"{record.campaign.namespace}/{record.campaign.name}"
    head = (
        f"{where} step {record.step} invocation {record.index} {data_id}: {record.state} "
        f"after {record.attempts} attempts on {record.node or '-'}"
    )
    lines = [head]
    lines += [f"  input  {did}" for did in record.inputs]
    lines += [f"  output {did}" for did in record.outputs]
    return lines


@click.command()
@click.argument("campaign")
@_NAMESPACE
@_FORMAT
@_DATABASE
def report(campaign: str, namespace: str | None, output: str, database_url: str | None) -> None:
    """Counts, failures by class and by node, runtime and memory of CAMPAIGN's steps."""
    with CommandContext(database_url=database_url) as context:
        ledger = context.ledger()
        result = ledger.report(ledger.find(campaign, namespace))
    click.echo(_dump(result.to_dict()) if output == "json" else format_report(result))


@click.group()
def provenance() -> None:
    """Which invocation made a file, from which inputs; all outputs of a campaign."""


@provenance.command("outputs")
@click.argument("campaign")
@click.option("--step", help="Only this step.")
@_NAMESPACE
@_FORMAT
@_DATABASE
def outputs_command(
    campaign: str,
    step: str | None,
    namespace: str | None,
    output: str,
    database_url: str | None,
) -> None:
    """Every output of CAMPAIGN (or of one step), by invocation, with its inputs."""
    with CommandContext(database_url=database_url) as context:
        ledger = context.ledger()
        records = ledger.outputs(ledger.find(campaign, namespace), step)
    if output == "json":
        click.echo(_dump([r.to_dict() for r in records]))
        return
    for record in records:
        click.echo("\n".join(format_invocation(record)))


@provenance.command("inputs")
@click.argument("did")
@_FORMAT
@_DATABASE
def inputs_command(did: str, output: str, database_url: str | None) -> None:
    """Which invocation wrote DID and from which inputs; which invocations read it."""
    with CommandContext(database_url=database_url) as context:
        result = context.ledger().provenance(did)
    if output == "json":
        click.echo(_dump(result.to_dict()))
        return
    lines = [f"{did}"]
    for record in result.made_by:
        lines += ["made by:", *(f"  {line}" for line in format_invocation(record))]
    for record in result.read_by:
        lines += ["read by:", *(f"  {line}" for line in format_invocation(record))]
    click.echo("\n".join(lines))
