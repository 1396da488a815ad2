"""Benchmark catch-up archiving (``spec.catchUp``) against a real Rucio server.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/catchup.py``
(``--datasets 500``; ``--help`` for the rest). It starts its own Rucio server (SQLite, or
``--database postgresql``) in a temporary directory and stops it at the end. One
ReplicationRule selects ``--datasets`` datasets of one file each, held on a TAPE RSE, with a
DISK destination; no transfer runs until the benchmark runs Rucio's conveyor, so the rules
fall behind. The service's clock is moved past ``catchUp.after`` (nothing sleeps). For each
pass it prints wall time and Rucio calls (per rule where it matters):

create      the first pass: rules created, the nominal transfer limit set
start       the pass that finds the backlog: every rule's priority raised, the limit doubled
steady      a pass while catching up with nothing new to ask (what every timer tick costs)
end         after the conveyor drained the backlog: priorities and limit back to nominal
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from steward.models.replication import ReplicationRule
from steward.models.site import Site
from steward.testing.rucio_server import run_rucio_server

MOCK = "rucio.rse.protocols.mock.Default"


def _site() -> Site:
    def rse(name: str, kind: str) -> dict[str, Any]:
        protocol = {"scheme": "mock", "hostname": "localhost", "port": 0, "impl": MOCK}
        return {"name": name, "type": kind, "protocols": [{**protocol, "prefix": f"/{name}"}]}

    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": "bench"},
            "spec": {
                "facility": "BENCH",
                "rses": [rse("BENCH_TAPE", "TAPE"), rse("BENCH_DISK", "DISK")],
            },
        }
    )


def _fill(storage: Any, scope: str, count: int) -> list[str]:  # noqa: ANN401 - RucioStorage
    from steward.storage.rucio import File  # noqa: PLC0415 - after TMPDIR is set

    client = storage._client()  # noqa: SLF001 - bulk test data
    names = [f"ds-{i:06d}" for i in range(count)]
    for start in range(0, count, 500):
        batch = names[start : start + 500]
        storage.add_replicas("BENCH_TAPE", [File(f"{scope}:{n}.f", bytes=100) for n in batch])
        client.add_dids(
            [
                {
                    "scope": scope,
                    "name": n,
                    "type": "DATASET",
                    "dids": [{"scope": scope, "name": f"{n}.f"}],
                }
                for n in batch
            ]
        )
    return [f"{scope}:{n}" for n in names]


def main() -> None:
    """Run the passes and print their numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=500)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="steward-bench-catchup-"))
    os.environ["TMPDIR"] = str(work)
    tempfile.tempdir = None
    from steward.services.audit import AuditService, ResourceRef  # noqa: PLC0415
    from steward.services.replication import ReplicationService  # noqa: PLC0415
    from steward.storage.database import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR is set

    with run_rucio_server(work / "rucio", database=args.database) as server:
        storage = RucioStorage(server.settings(rucio_calls_per_second=100_000))
        storage.register_site(_site())
        scope = f"b{secrets.token_hex(4)}"
        storage.add_scope(scope)
        dids = _fill(storage, scope, args.datasets)
        engine = make_engine(f"sqlite:///{work / 'audit.db'}")
        upgrade(engine)
        now = [datetime.now(UTC)]
        service = ReplicationService(
            rucio=storage,
            audit=AuditService(make_sessionmaker(engine)),
            cluster_id="bench",
            clock=lambda: now[0],
            batch_size=500,
        )
        rule = ReplicationRule.model_validate(
            {
                "apiVersion": "steward.lsst.io/v1alpha1",
                "kind": "ReplicationRule",
                "metadata": {"name": "bench", "namespace": "bench", "uid": "bench-uid"},
                "spec": {
                    "selector": {"dids": dids},
                    "destination": "site=BENCH&type=DISK",
                    "catchUp": {"after": "1h", "backlog": 1, "transfers": 100},
                },
            }
        )
        ref = ResourceRef("ReplicationRule", "bench", "bench", uid="bench-uid", generation=1)
        status: dict[str, Any] | None = None

        def run(label: str) -> None:
            nonlocal status
            calls = storage.api_calls
            began = time.perf_counter()
            outcome = service.reconcile(rule, ref, status, fresh=False)
            seconds = time.perf_counter() - began
            status = outcome.status
            made = storage.api_calls - calls
            catch_up = status["catchUp"]
            print(
                f"{label:7} {seconds:7.2f} s  {made:6d} Rucio calls "
                f"({made / args.datasets:.3f} per rule)  active={catch_up['active']} "
                f"backlog={catch_up['backlog']} priority={catch_up['priority']} "
                f"limit={catch_up['transfers']}"
            )

        print(f"{args.datasets} rules, {args.database}")
        run("create")
        now[0] += timedelta(hours=2)
        run("start")
        run("steady")
        began = time.perf_counter()
        server.daemons.converge(scope=scope)
        print(f"conveyor drained the backlog in {time.perf_counter() - began:.1f} s")
        run("end")
        engine.dispose()
        storage.close()


if __name__ == "__main__":
    main()
