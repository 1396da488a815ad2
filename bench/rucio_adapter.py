"""Benchmark the Rucio storage against Rucio's raw client on a real local server.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/rucio_adapter.py``
(``--rules N``, ``--rounds R``, ``--database sqlite|postgresql``, ``--placement``). It measures:

creating N rules
    through `RucioStorage.add_rules` (batched, idempotent), through a plain loop calling
    ``add_replication_rule`` once per DID, and through one raw ``add_replication_rule`` call
    with all N DIDs. The adapter's goal is to stay within 1.3x of the raw batched call. The
    adapter and the raw batched call run R times each on fresh DIDs, alternating which goes
    first (the database grows as the run goes on); medians are reported.
re-creating N existing rules
    through the adapter (every DID a duplicate: one failed batch, one listing, adoption).
refreshing N rule states
    with one listing (`RucioStorage.refresh_rules`) and with one ``get_replication_rule`` per
    rule: API calls and seconds.
parsing a listing
    the CPU this process spends turning one listing of the account's rules into `Rule`
    objects: Steward's parse of Rucio's answers against the raw client's own.

Each line gives wall seconds and the CPU seconds the server's gunicorn processes spent, which
other load on the machine does not inflate. With ``--placement elsewhere`` (the default) every
rule asks for a copy on another site's disk, so it is REPLICATING and creates a transfer
request, as a real placement does; with ``--placement in-place`` it names the RSE holding the
replicas and is OK at once. The rate cap is lifted: at the default 20 calls a second the
per-rule refresh alone would take N / 20 seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

MOCK = "rucio.rse.protocols.mock.Default"
SOURCE, DESTINATION = "BENCH_SRC", "BENCH_DST"
CHUNK = 500
"""DIDs per setup call: Rucio looks DIDs up with one OR term each; SQLite refuses 1,000."""


@dataclass(frozen=True)
class Measure:
    """Wall seconds, server CPU seconds and adapter API calls of one step."""

    wall: float
    cpu: float
    calls: int


def site(name: str, rse: str) -> Any:  # noqa: ANN401 - a Site
    """A one-RSE mock site at distance 1 from the other."""
    from steward.models.site import Site  # noqa: PLC0415

    other = "dst" if name == "src" else "src"
    protocol = {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/b", "impl": MOCK}
    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": name},
            "spec": {
                "facility": name.upper(),
                "rses": [{"name": rse, "type": "DISK", "protocols": [protocol]}],
                "distances": [{"site": other, "distance": 1}],
            },
        }
    )


def datasets(client: Any, scope: str, prefix: str, count: int) -> list[str]:  # noqa: ANN401
    """Create ``count`` datasets of one file each (replica on the source), `CHUNK` a call."""
    names = [f"{prefix}{i:05d}" for i in range(count)]
    for start in range(0, count, CHUNK):
        chunk = names[start : start + CHUNK]
        files = [
            {"scope": scope, "name": f"{n}.f", "bytes": 100, "adler32": "00000001"} for n in chunk
        ]
        client.add_replicas(SOURCE, files)
        client.add_dids([{"scope": scope, "name": n, "type": "DATASET"} for n in chunk])
        client.attach_dids_to_dids(
            [
                {"scope": scope, "name": n, "dids": [{"scope": scope, "name": f"{n}.f"}]}
                for n in chunk
            ]
        )
    return [f"{scope}:{n}" for n in names]


def as_dicts(dids: list[str]) -> list[dict[str, str]]:
    """``scope:name`` strings as the raw client wants them."""
    return [dict(zip(("scope", "name"), did.split(":", 1), strict=True)) for did in dids]


def group_cpu(leader: int) -> float:
    """CPU seconds (user and system) used so far by the processes of a process group."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[2]) == leader:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    """One server, the adapter and a raw client on it, and DIDs to put rules on."""

    storage: Any
    client: Any
    server_pid: int
    target: str

    def measure(self, function: Callable[[], Any]) -> tuple[Measure, Any]:
        """Run ``function``; return what it cost and its result."""
        calls, cpu, start = self.storage.api_calls, group_cpu(self.server_pid), time.perf_counter()
        result = function()
        wall = time.perf_counter() - start
        spent = Measure(wall, group_cpu(self.server_pid) - cpu, self.storage.api_calls - calls)
        return spent, result

    def raw_batched(self, dids: list[str]) -> Measure:
        """One raw ``add_replication_rule`` call for all ``dids``."""
        return self.measure(
            lambda: self.client.add_replication_rule(as_dicts(dids), 1, self.target)
        )[0]

    def raw_loop(self, dids: list[str]) -> Measure:
        """One raw ``add_replication_rule`` call per DID."""
        return self.measure(
            lambda: [self.client.add_replication_rule(as_dicts([d]), 1, self.target) for d in dids]
        )[0]


def line(label: str, measure: Measure, calls: int, extra: str = "") -> None:
    """Print one result line."""
    print(
        f"  {label:30} {measure.wall:7.2f} s wall {measure.cpu:7.2f} s server CPU "
        f"{calls:6d} calls  {extra}"
    )


def median(measures: list[Measure]) -> Measure:
    """Median of each field."""
    return Measure(
        statistics.median(m.wall for m in measures),
        statistics.median(m.cpu for m in measures),
        int(statistics.median(m.calls for m in measures)),
    )


def create(bench: Bench, spec: Any, sets: dict[str, list[str]], rounds: int) -> list[str]:  # noqa: ANN401
    """Time rule creation every way; print it; return the rule ids of one adapter set."""
    raw: list[Measure] = []
    adapter: list[Measure] = []
    for index in range(rounds):
        raw_first = index % 2 == 0
        if raw_first:
            raw.append(bench.raw_batched(sets[f"r{index}"]))
        adapter.append(bench.measure(partial(bench.storage.add_rules, sets[f"a{index}"], spec))[0])
        if not raw_first:
            raw.append(bench.raw_batched(sets[f"r{index}"]))
    loop = bench.raw_loop(sets["loop"])
    again, added = bench.measure(lambda: bench.storage.add_rules(sets["a0"], spec))
    best_raw, best = median(raw), median(adapter)
    runs = ", ".join(f"{r.wall:.1f}/{a.wall:.1f}" for r, a in zip(raw, adapter, strict=True))
    line("raw client, one batched call", best_raw, 1)
    line(
        "adapter add_rules",
        best,
        best.calls,
        f"{best.wall / best_raw.wall:.2f}x wall, {best.cpu / best_raw.cpu:.2f}x CPU of the raw "
        f"batched call (wall raw/adapter by round: {runs})",
    )
    line(
        "raw client, one call per DID",
        loop,
        len(sets["loop"]),
        f"{loop.wall / best_raw.wall:.2f}x wall",
    )
    line("adapter again, all existing", again, again.calls, f"adopted {len(added.adopted)}")
    return list(added.rule_ids.values())


def refresh(bench: Bench, ids: list[str]) -> None:
    """Time one listing against one get per rule; print it."""
    bulk, refreshed = bench.measure(lambda: bench.storage.refresh_rules(ids))
    assert len(refreshed) == len(ids)
    single, _ = bench.measure(lambda: [bench.storage.get_rule(i) for i in ids])
    line("adapter refresh_rules (list)", bulk, bulk.calls)
    line("adapter get_rule per rule", single, single.calls, f"{single.wall / bulk.wall:.0f}x wall")
    parsing(bench)


def parsing(bench: Bench, rounds: int = 3) -> None:
    """CPU of this process for one listing of the account's rules, as `Rule` objects.

    Through the adapter (Steward's parse of Rucio's answer, `responses`) and through the raw
    client's own parser; the rounds alternate which goes first, medians are printed. The
    adapter's first listing parses its dates cold (``rucio_date``'s cache cleared), the second
    finds them known, as the rule snapshot does when it lists the same rules again.
    """
    from steward.storage.rucio.responses import rucio_date  # noqa: PLC0415 - after TMPDIR
    from steward.storage.rucio.types import Rule  # noqa: PLC0415

    def cpu(function: Callable[[], Any]) -> float:
        start = time.process_time()
        function()
        return time.process_time() - start

    account = {"account": bench.storage.account}
    raw = partial(
        cpu, lambda: [Rule.from_rucio(r) for r in bench.client.list_replication_rules(account)]
    )
    theirs, cold, warm = [], [], []
    for round_ in range(rounds):
        if round_ % 2:
            theirs.append(raw())
        rucio_date.cache_clear()
        cold.append(cpu(bench.storage.list_rules))
        warm.append(cpu(bench.storage.list_rules))
        if not round_ % 2:
            theirs.append(raw())
    rucio, first, again = (statistics.median(v) for v in (theirs, cold, warm))
    print(
        f"  parsing the listing, this process's CPU: Rucio's parser {rucio:.2f} s, Steward's "
        f"{first:.2f} s cold ({rucio / first:.1f}x less), {again:.2f} s again "
        f"({rucio / again:.1f}x less)"
    )


def run(rules: int, rounds: int, database: str, placement: str) -> None:
    """Start a server, run every measurement, print the numbers."""
    from steward.storage.rucio import RucioStorage, RuleSpec  # noqa: PLC0415 - after TMPDIR
    from steward.testing.rucio_server import run_rucio_server  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="bench-rucio-"))
    with run_rucio_server(directory, database=database) as server:
        os.environ["RUCIO_CONFIG"] = str(server.config_path)
        from rucio.client import Client  # noqa: PLC0415 - the raw client, for comparison

        timings = ", ".join(f"{key} {value:.2f} s" for key, value in server.timings.items())
        print(f"Rucio server on {database}: {timings}; load average {os.getloadavg()[0]:.1f}")
        storage = RucioStorage(server.settings(rucio_calls_per_second=1e9))
        source, destination = site("src", SOURCE), site("dst", DESTINATION)
        storage.register_site(source)
        storage.register_site(destination, peers=[source])
        storage.register_site(source, peers=[destination])
        client = Client()
        for rse in (SOURCE, DESTINATION):  # the raw client's account has no quota of its own
            client.set_local_account_limit(client.account, rse, -1)
        storage.add_scope("bench")
        keys = [f"{way}{i}" for i in range(rounds) for way in ("a", "r")] + ["loop"]
        sets = {key: datasets(client, "bench", f"{key}-", rules) for key in keys}
        target = DESTINATION if placement == "elsewhere" else SOURCE
        bench = Bench(storage, client, dict(server.processes())["rucio-server"], target)
        state = "REPLICATING, a transfer request each" if placement == "elsewhere" else "OK"
        print(f"\nCreating {rules} rules ({state}), medians of {rounds} rounds:")
        ids = create(bench, RuleSpec(target), sets, rounds)
        print(
            f"\nRefreshing {rules} rule states ({len(storage.list_rules())} rules in the account):"
        )
        refresh(bench, ids)
        print(f"load average at the end {os.getloadavg()[0]:.1f} (2 cores)")
        storage.close()


def main() -> None:
    """Parse arguments; give the run its own TMPDIR (Rucio's client caches tokens there)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--placement", choices=["elsewhere", "in-place"], default="elsewhere")
    args = parser.parse_args()
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="bench-tmp-")
    tempfile.tempdir = None
    run(args.rules, args.rounds, args.database, args.placement)


if __name__ == "__main__":
    main()
