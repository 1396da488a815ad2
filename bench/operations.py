"""Benchmark `steward find` and `steward ingest` against a real Rucio server.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/operations.py``
(``--datasets 2000 --files 200 --file-size 4``; ``--help`` for the rest). It starts its own
Rucio server (SQLite, or ``--database postgresql``) in a temporary directory and stops it at
the end. It measures:

find
    a scope of ``--datasets`` datasets of one file each, matched by ``datatype``: time to the
    first result, total time, results per second, Rucio calls per result, and the peak Python
    memory of the whole search (tracemalloc), at the full size and at a tenth of it: a
    streaming search's memory does not grow with the scope.
ingest
    ``--files`` local files of ``--file-size`` MiB: checksum throughput (Adler-32 and MD5 in one
    read), plan time, apply time, Rucio calls per file, and the time of a second plan (nothing
    to do).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from steward.models.site import Site
from steward.testing.rucio_server import run_rucio_server

MOCK = "rucio.rse.protocols.mock.Default"


def _site() -> Site:
    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": "bench"},
            "spec": {
                "facility": "BENCH",
                "rses": [
                    {
                        "name": "BENCH_DISK",
                        "type": "DISK",
                        "protocols": [
                            {
                                "scheme": "mock",
                                "hostname": "localhost",
                                "port": 0,
                                "prefix": "/bench",
                                "impl": MOCK,
                            }
                        ],
                    }
                ],
            },
        }
    )


def _fill(storage: Any, scope: str, count: int) -> None:  # noqa: ANN401 - RucioStorage
    from steward.storage.rucio import File  # noqa: PLC0415 - after TMPDIR is set

    client = storage._client()  # noqa: SLF001 - bulk test data
    for start in range(0, count, 500):
        names = [f"ds-{i:07d}" for i in range(start, min(count, start + 500))]
        storage.add_replicas("BENCH_DISK", [File(f"{scope}:{n}.f", bytes=100) for n in names])
        client.add_dids(
            [
                {
                    "scope": scope,
                    "name": n,
                    "type": "DATASET",
                    "meta": {"datatype": "raw"},
                    "dids": [{"scope": scope, "name": f"{n}.f"}],
                }
                for n in names
            ]
        )


def _find(storage: Any, scope: str) -> dict[str, float]:  # noqa: ANN401
    from steward.services.find import FindQuery, FindService  # noqa: PLC0415

    service = FindService(storage, {})
    calls = storage.api_calls
    tracemalloc.start()
    began = time.perf_counter()
    results = service.find(FindQuery([scope], {"datatype": "raw"}))
    next(results)
    first = time.perf_counter() - began
    count = 1 + sum(1 for _ in results)
    total = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "results": count,
        "first_s": first,
        "total_s": total,
        "per_s": count / total,
        "calls_per_result": (storage.api_calls - calls) / count,
        "peak_mib": peak / 2**20,
    }


def _ingest(
    storage: Any,  # noqa: ANN401 - RucioStorage
    audit: Any,  # noqa: ANN401
    scope: str,
    *,
    files: int,
    size_mib: int,
    work: Path,
) -> None:
    from steward.services.ingest import IngestRequest, IngestService  # noqa: PLC0415
    from steward.storage.checksums import file_checksums  # noqa: PLC0415

    paths = []
    for i in range(files):
        path = work / f"annex-{i:05d}.tar"
        path.write_bytes(os.urandom(size_mib * 2**20))
        paths.append(path)
    began = time.perf_counter()
    for path in paths:
        file_checksums(path)
    checksum_s = time.perf_counter() - began
    service = IngestService(storage, audit, actor="bench")
    request = IngestRequest(paths, scope, "BENCH_DISK", {"datatype": "raw"}, "bench-ingest")
    calls = storage.api_calls
    began = time.perf_counter()
    plan = service.plan(request)
    plan_s = time.perf_counter() - began
    began = time.perf_counter()
    service.apply(plan)
    apply_s = time.perf_counter() - began
    per_file = (storage.api_calls - calls) / files
    began = time.perf_counter()
    assert not service.plan(request).pending
    replan_s = time.perf_counter() - began
    mib = files * size_mib
    print(
        f"ingest {files} files of {size_mib} MiB: checksums {mib / checksum_s:.0f} MiB/s; "
        f"plan {plan_s:.2f} s (reads every file); apply {apply_s:.2f} s; "
        f"{per_file:.2f} Rucio calls per file; second plan {replan_s:.2f} s"
    )


def main() -> None:
    """Run the benchmark and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=2000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--file-size", type=int, default=4, help="MiB per ingested file")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="steward-bench-ops-"))
    os.environ["TMPDIR"] = str(work)
    tempfile.tempdir = None
    from steward.services.audit import AuditService  # noqa: PLC0415 - after TMPDIR is set
    from steward.storage.database import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415

    with run_rucio_server(work / "rucio", database=args.database) as server:
        storage = RucioStorage(server.settings(rucio_calls_per_second=100_000))
        storage.register_site(_site())
        storage.allow_metadata_values("datatype", ["raw"])
        for count in (args.datasets // 10, args.datasets):
            scope = f"b{secrets.token_hex(4)}"
            storage.add_scope(scope)
            _fill(storage, scope, count)
            numbers = _find(storage, scope)
            print(
                f"find over {count} datasets: first result {numbers['first_s']:.2f} s, "
                f"all in {numbers['total_s']:.1f} s ({numbers['per_s']:.0f}/s), "
                f"{numbers['calls_per_result']:.2f} Rucio calls per result, "
                f"peak Python memory {numbers['peak_mib']:.2f} MiB"
            )
        engine = make_engine(f"sqlite:///{work / 'audit.db'}")
        upgrade(engine)
        scope = f"b{secrets.token_hex(4)}"
        storage.add_scope(scope)
        (work / "files").mkdir()
        _ingest(
            storage,
            AuditService(make_sessionmaker(engine)),
            scope,
            files=args.files,
            size_mib=args.file_size,
            work=work / "files",
        )
        engine.dispose()


if __name__ == "__main__":
    main()
