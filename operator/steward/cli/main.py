"""The ``steward`` command: one click group, each sub-command in its own module.

Sub-commands are imported when they are run, not when ``steward`` starts: ``steward validate``
runs in every policy repository's CI and under editors, and importing the operator, kopf, the
Kubernetes client and the audit store for it would cost more than validating a thousand files.
"""

from __future__ import annotations

import importlib

import click

from steward.exceptions import StewardError
from steward.observability import configure_cli_logging

COMMANDS = {
    "apply": "steward.cli.gitops:apply",
    "audit": "steward.cli.audit:audit",
    "crds": "steward.cli.crds:crds",
    "dev": "steward.cli.dev:dev",
    "drill": "steward.cli.drill:drill",
    "find": "steward.cli.find:find",
    "history": "steward.cli.history:history",
    "ingest": "steward.cli.ingest:ingest",
    "operator": "steward.cli.operator:operator",
    "plan": "steward.cli.gitops:plan",
    "provenance": "steward.cli.campaigns:provenance",
    "render": "steward.cli.render:render_site",
    "report": "steward.cli.campaigns:report",
    "validate": "steward.cli.validate:validate",
}
"""Sub-command name -> ``module:attribute`` of its click command."""


class _Group(click.Group):
    """Loads sub-commands on demand; turns Steward's own errors into one line and exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)  # noqa: S101 - the table names commands
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StewardError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="steward")
def cli() -> None:
    """Steward: declarative placement, retention and campaigns for the Rubin data facility."""
    configure_cli_logging()


def main() -> None:
    """Console-script entry point."""
    cli()
