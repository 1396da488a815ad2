"""The ``steward`` command: one click group, each sub-command in its own module."""

from __future__ import annotations

import click

from steward.cli.audit import audit
from steward.cli.campaigns import provenance, report
from steward.cli.crds import crds
from steward.cli.dev import dev
from steward.cli.gitops import apply, plan
from steward.cli.history import history
from steward.cli.operator import operator
from steward.cli.render import render_site
from steward.cli.validate import validate
from steward.exceptions import StewardError


class _Group(click.Group):
    """Turns Steward's own errors into a one-line message and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StewardError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="steward")
def cli() -> None:
    """Steward: declarative placement, retention and campaigns for the Rubin data facility."""


cli.add_command(audit)
cli.add_command(crds)
cli.add_command(dev)
cli.add_command(apply)
cli.add_command(plan)
cli.add_command(history)
cli.add_command(operator)
cli.add_command(provenance)
cli.add_command(render_site)
cli.add_command(report)
cli.add_command(validate)


def main() -> None:
    """Console-script entry point."""
    cli()
