"""``steward dev``: the local stack for developers (see docs/dev-stack.md)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from steward.testing import devstack
from steward.testing.k8sbuild import BuildError

__all__ = ["dev"]


def _state_dir(option: Path | None) -> Path:
    if option is not None:
        return option
    return devstack.default_state_dir(devstack.find_repo_root(Path.cwd()))


_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="STEWARD_DEV_DIR",
    help="Where the stack keeps its state and logs [default: <checkout>/.steward/dev].",
)


@click.group()
def dev() -> None:
    """Run the local stack: Kubernetes (kwok nodes), Rucio, sites/ and policies/, the operator."""


@dev.command()
@_state_dir_option
@click.option("--nodes", default=3, show_default=True, help="kwok nodes to create.")
@click.option(
    "--rucio-database",
    type=click.Choice(devstack.RUCIO_DATABASES),
    default="auto",
    show_default=True,
    help="Rucio's database; auto: PostgreSQL when installed (custom metadata keys), else SQLite.",
)
@click.option(
    "--kueue",
    is_flag=True,
    help="Also run Kueue as a MultiKueue manager, and a control plane with Kueue for each "
    "worker site of sites/ (NCSA, IN2P3).",
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the stack.")
def up(
    *, state_dir: Path | None, nodes: int, rucio_database: str, kueue: bool, timeout: float
) -> None:
    """Start the stack in the background (or report the one already running).

    In order: the control plane with kwok nodes and crds/, Rucio with its daemons, then the
    `steward` namespace, the audit store, sites/ and policies/ applied with git provenance,
    the operator, and a little demo data in Rucio for the ReplicationRules to place.
    The first run builds the Kubernetes binaries from Go modules and the Rucio server venv,
    which takes a while; later runs reuse them. Every `up` starts empty.
    """
    repo_root = devstack.find_repo_root(Path.cwd())
    directory = _state_dir(state_dir)
    try:
        state, started = devstack.up(
            directory,
            repo_root,
            nodes=nodes,
            kueue=kueue,
            rucio_database=rucio_database,
            timeout=timeout,
            log=lambda message: click.echo(message, err=True),
        )
    except (devstack.DevStackError, BuildError) as error:
        raise click.ClickException(str(error)) from error
    click.echo("dev stack started" if started else "dev stack already running")
    for line in state.summary:
        click.echo(f"  {line}")
    for line in state.notes:
        click.echo(f"  note: {line}")
    option = f" --state-dir {shlex.quote(str(directory))}" if state_dir else ""
    click.echo(f'  for a shell: eval "$(steward dev env{option})"')


@dev.command()
@_state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop the stack; nothing keeps running, and the cluster's contents are discarded."""
    try:
        state = devstack.down(_state_dir(state_dir))
    except devstack.DevStackError as error:
        raise click.ClickException(str(error)) from error
    if state is None:
        click.echo("dev stack not running")
    else:
        click.echo(f"dev stack stopped: {', '.join(p.name for p in state.processes)}")


@dev.command()
@_state_dir_option
def status(state_dir: Path | None) -> None:
    """Show each component as up or down; exit 3 unless everything is up."""
    state, health = devstack.status(_state_dir(state_dir))
    if state is None:
        click.echo("dev stack not running")
        raise SystemExit(3)
    supervisor = "up" if state.supervisor_alive() else "down"
    click.echo(f"{'supervisor':<24} {supervisor:<5} pid {state.supervisor} ({state.phase})")
    started = [*state.components, *(p.component for p in state.processes)]
    for component in dict.fromkeys(started):
        click.echo(f"[{component}]")
        for process in (p for p in state.processes if p.component == component):
            word = "up" if health[process.name] else "down"
            click.echo(f"{process.name:<24} {word:<5} pid {process.pid}  {process.health_url}")
    if state.error:
        click.echo(f"error: {state.error}")
    for line in state.notes:
        click.echo(f"note: {line}")
    if supervisor == "down" or not all(health.values()):
        raise SystemExit(3)


@dev.command()
@_state_dir_option
def env(state_dir: Path | None) -> None:
    """Print `export` lines for a shell: KUBECONFIG, RUCIO_CONFIG, STEWARD_*, PATH.

    PATH gets the stack's kubectl and the directory of this `steward` command.
    """
    state = devstack.read_state(_state_dir(state_dir))
    if state is None or state.phase != "ready" or not state.supervisor_alive():
        raise click.ClickException("the dev stack is not running: start it with `steward dev up`")
    for name, value in state.env.items():
        click.echo(f"export {name}={shlex.quote(value)}")
    # The stack's kubectl, and this steward (for `steward audit log`, `history`, `plan`...).
    directories = [state.bin_dir]
    here = Path(sys.executable).parent
    if (here / "steward").is_file():
        directories.append(str(here))
    click.echo(f'export PATH={shlex.quote(":".join(directories))}:"$PATH"')
