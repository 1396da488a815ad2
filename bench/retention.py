"""Benchmark a RetentionPolicy's plan over a million replicas against Rucio's own listing.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/retention.py``
(``--replicas N``, default 1,000,000; ``--database postgresql|sqlite``, default PostgreSQL;
``--gate-only`` for the synthetic gate alone, without Rucio).

What it builds: a real Rucio server (on PostgreSQL) holding N datasets of one file each, every
one with a rule at one disk RSE, all created 30 days ago. They are written straight into
Rucio's database with Rucio's own models, in the server's virtual environment (creating a
million rules through the API takes hours; the rows are what the API would have written, less
the locks, which neither listing reads). The policy under test selects the scope by
metadata (``datatype: raw``), covers that RSE, and expires after 21 days: every rule is due.

What it measures, each in a fresh Python process (so peak RSS is that step's alone):

listing
    Rucio's own bulk listing of the same rules with Rucio's client
    (``list_replication_rules`` filtered by scope, streamed and counted).
plan
    Steward's whole plan, `steward.services.retention.preview_plan`: selecting the DIDs by
    metadata, streaming the rules, judging ages, and the deletion gate over all of them.
gate
    The deletion gate alone (`plan_deletion`) over N synthetic candidates, holds and
    locks on 1% of them: the pure part of the plan.

Goals (issue 12): the plan within 2x of the listing, under 10 s, peak RSS under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import secrets
import subprocess
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RSE = "BENCH_DISK"
CHUNK = 20_000

LOADER = textwrap.dedent(
    """
    import sys, uuid
    from datetime import datetime, timedelta
    from rucio.common.types import InternalAccount, InternalScope
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import DIDType, RuleGrouping, RuleNotification, RuleState
    from rucio.db.sqla.session import get_session
    from sqlalchemy import text

    scope_name, count, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    scope, root = InternalScope(scope_name), InternalAccount("root")
    then = datetime.utcnow() - timedelta(days=30)
    session = get_session()
    for start in range(0, count, chunk):
        names = [f"ds-{i:07d}" for i in range(start, min(count, start + chunk))]
        session.bulk_insert_mappings(models.DataIdentifier, [
            dict(scope=scope, name=n, account=root, did_type=DIDType.DATASET, is_open=False,
                 bytes=2_000_000_000, length=1, datatype="raw", created_at=then,
                 updated_at=then) for n in names])
        session.bulk_insert_mappings(models.ReplicationRule, [
            dict(id=uuid.uuid4().hex, account=root, scope=scope, name=n,
                 did_type=DIDType.DATASET, state=RuleState.OK, rse_expression=sys.argv[4],
                 copies=1, grouping=RuleGrouping.DATASET, locked=False, locks_ok_cnt=1,
                 notification=RuleNotification.NO, created_at=then, updated_at=then)
            for n in names])
        session.commit()
    if session.bind.dialect.name == "postgresql":
        session.execute(text("ANALYZE"))  # what autovacuum does after a bulk load
        session.commit()
    """
)


def _site() -> Any:  # noqa: ANN401 - a Site
    from steward.models.site import Site  # noqa: PLC0415

    protocol = {
        "scheme": "mock",
        "hostname": "localhost",
        "port": 0,
        "prefix": "/b",
        "impl": "rucio.rse.protocols.mock.Default",
    }
    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": "bench"},
            "spec": {
                "facility": "BENCH",
                "rses": [{"name": RSE, "type": "DISK", "protocols": [protocol]}],
            },
        }
    )


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    """CPU seconds of this process so far (wall time depends on the machine's other load)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _listing(settings: dict[str, Any], scope: str) -> dict[str, Any]:
    """Rucio's own listing, with Rucio's client, streamed and counted."""
    from rucio.client import Client  # noqa: PLC0415

    client = Client(
        rucio_host=settings["host"],
        auth_host=settings["host"],
        account="root",
        auth_type="userpass",
        creds={"username": settings["username"], "password": settings["password"]},
    )
    client.whoami()
    start, cpu = time.perf_counter(), _cpu()
    count = sum(1 for _ in client.list_replication_rules({"scope": scope, "account": "root"}))
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": _cpu() - cpu,
        "rules": count,
        "peak_mib": _peak_mib(),
    }


def _plan(settings: dict[str, Any], scope: str) -> dict[str, Any]:
    """Steward's plan of the policy, through its Rucio storage."""
    from steward.config import Settings  # noqa: PLC0415
    from steward.models.retention import RetentionPolicy  # noqa: PLC0415
    from steward.services.deletion import Protections  # noqa: PLC0415
    from steward.services.retention import preview_plan  # noqa: PLC0415
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415

    policy = RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "selector": {"scope": scope, "match": {"datatype": "raw"}},
                "rses": RSE,
                "lifetime": "21d",
                "dryRun": True,
            },
        }
    )
    storage = RucioStorage(
        Settings(
            rucio_host=settings["host"],
            rucio_account="root",
            rucio_username=settings["username"],
            rucio_password=settings["password"],
            rucio_calls_per_second=1000,
        )
    )
    storage.list_rses(RSE)  # log in before the clock starts, as the listing does
    start, cpu = time.perf_counter(), _cpu()
    plan = preview_plan(storage, policy, Protections(), now=datetime.now(UTC))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu() - cpu,
        "rules": plan.count,
        "mode": plan.mode.value,
        "hash": plan.hash,
        "peak_mib": _peak_mib(),
    }


def _gate(count: int) -> dict[str, Any]:
    """The deletion gate alone over ``count`` synthetic candidates."""
    from steward.services.deletion import (  # noqa: PLC0415
        Candidate,
        DeletionRequest,
        Operation,
        Protections,
        plan_deletion,
    )

    now = datetime.now(UTC)
    rses = frozenset({RSE})
    candidates = [
        Candidate(secrets.token_hex(16), f"bench:ds-{i:07d}", 2_000_000_000, rses, "Age")
        for i in range(count)
    ]
    later = now + timedelta(days=1)
    protections = Protections(
        legal_holds={f"bench:ds-{i:07d}": "h" for i in range(0, count, 200)},
        compliance_locks={f"bench:ds-{i:07d}": later for i in range(100, count, 200)},
    )
    request = DeletionRequest("RetentionPolicy/bench/bench", Operation.EXPIRE, candidates)
    start, cpu = time.perf_counter(), _cpu()
    plan = plan_deletion(request, protections, now=now)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": _cpu() - cpu,
        "rules": plan.count,
        "protected": plan.protected(),
        "peak_mib": _peak_mib(),
    }


def _isolated(function: Any, *args: Any) -> dict[str, Any]:  # noqa: ANN401
    """Run one measurement in a fresh interpreter and return what it reports."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(function, args)
    return result


def run(replicas: int, database: str, *, gate_only: bool = False) -> None:
    """Load the replicas, then measure the listing, the plan and the gate."""
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415
    from steward.testing.rucio_server import run_rucio_server  # noqa: PLC0415

    if gate_only:
        print(json.dumps({"gate": _isolated(_gate, replicas)}, indent=2))
        return
    directory = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    with run_rucio_server(directory, database=database) as server:
        # The loaded rules are root's (LOADER): list and plan them as root, whose credentials
        # differ from Steward's own account's.
        settings = {
            "host": server.host,
            "username": server.root_username,
            "password": server.root_password.get_secret_value(),
        }
        scope = f"b{secrets.token_hex(4)}"
        with RucioStorage(server.settings(rucio_calls_per_second=1000)) as storage:
            storage.register_site(_site())
            storage.add_scope(scope)
            storage.allow_metadata_values("datatype", ["raw"])
        began = time.perf_counter()
        subprocess.run(
            [
                str(server.venv / "bin" / "python"),
                "-c",
                LOADER,
                scope,
                str(replicas),
                str(CHUNK),
                RSE,
            ],
            check=True,
            env={**os.environ, **server.env()},
        )
        print(
            f"Rucio on {database}: {replicas:,} datasets with one rule each at {RSE}, loaded "
            f"in {time.perf_counter() - began:.0f} s; load average {os.getloadavg()[0]:.1f}"
        )
        listing = _isolated(_listing, settings, scope)
        plan = _isolated(_plan, settings, scope)
    gate = _isolated(_gate, replicas)
    print(json.dumps({"listing": listing, "plan": plan, "gate": gate}, indent=2))
    ratio = plan["seconds"] / listing["seconds"]
    print(
        f"Rucio listing {listing['seconds']:.1f} s ({listing['peak_mib']:.0f} MiB); "
        f"Steward plan {plan['seconds']:.1f} s ({plan['peak_mib']:.0f} MiB), "
        f"{ratio:.2f}x the listing; gate alone {gate['seconds']:.1f} s, "
        f"{gate['cpu_seconds']:.1f} s CPU ({gate['peak_mib']:.0f} MiB); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    goals = {
        "plan within 2x of the listing": ratio <= 2,  # noqa: PLR2004 - the goal
        "plan under 10 s": plan["seconds"] < 10,  # noqa: PLR2004 - the goal
        "plan under 500 MB RSS": plan["peak_mib"] * 2**20 < 500e6,  # noqa: PLR2004
    }
    for goal, met in goals.items():
        print(f"  {'met' if met else 'NOT met'}: {goal}")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--replicas", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--gate-only", action="store_true", help="only the synthetic gate")
    args = parser.parse_args()
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="bench-tmp-")
    run(args.replicas, args.database, gate_only=args.gate_only)


if __name__ == "__main__":
    main()
