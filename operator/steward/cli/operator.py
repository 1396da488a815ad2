"""``steward operator``: run the kopf operator with Steward's handlers and settings."""

from __future__ import annotations

import click
import kopf

__all__ = ["operator"]


@click.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespaces to watch.")
@click.option(
    "--standalone", is_flag=True, help="No peering: run even if another instance is active."
)
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True)
def operator(namespaces: tuple[str, ...], liveness: str, *, standalone: bool) -> None:
    """Run the operator (``kopf run -m steward.handlers`` with Steward's settings)."""
    import steward.handlers  # noqa: F401, PLC0415 - registers the handlers with kopf

    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=standalone,
        liveness_endpoint=liveness,
    )
