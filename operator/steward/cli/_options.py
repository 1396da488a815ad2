"""Options shared by the operations commands (``find``, ``ingest``, ``drill``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from steward.config import Settings
from steward.factory import CommandContext

__all__ = ["command_context", "kubeconfig_option", "meta_option", "parse_meta"]

F = TypeVar("F", bound=Callable[..., Any])


def parse_meta(
    _ctx: click.Context | None, param: click.Parameter | None, values: tuple[str, ...]
) -> dict[str, str]:
    """Turn repeated ``--meta key=value`` into a mapping; refuse anything else."""
    meta: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            msg = f"{value!r} is not KEY=VALUE"
            raise click.BadParameter(msg, param=param)
        if key.strip() in meta:
            msg = f"{key.strip()!r} given twice"
            raise click.BadParameter(msg, param=param)
        meta[key.strip()] = text
    return meta


def meta_option(help_text: str) -> Callable[[F], F]:
    """``--meta KEY=VALUE``, repeatable."""
    return click.option(
        "--meta",
        "meta",
        multiple=True,
        metavar="KEY=VALUE",
        callback=parse_meta,
        help=help_text,
    )


kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="Cluster whose Steward resources own rules (default: $KUBECONFIG, then in-cluster).",
)


def command_context(command: str, kubeconfig: Path | None = None) -> CommandContext:
    """The clients of one command; the actor is ``$STEWARD_ACTOR``, ``$USER`` or the command."""
    actor = os.environ.get("STEWARD_ACTOR") or os.environ.get("USER") or f"steward-{command}"
    return CommandContext(Settings(), kubeconfig=kubeconfig, actor=actor)
