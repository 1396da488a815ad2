"""Benchmark the operator end to end: ReplicationRules in a real cluster, rules in real Rucio.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/reconcile.py``
(``--rules 1000``, ``--single 20``; ``--help`` for the rest). It starts its own control plane,
Rucio server (SQLite) and ``steward operator --standalone`` process in a temporary directory,
and tears all of them down at the end. Every ReplicationRule selects one dataset of one file by
its DID, and its destination already holds the replica, so each Rucio rule is OK when created
and no transfer daemon is needed. Ready is observed through a watch on the namespace's
ReplicationRules: the first event that shows ``Ready=True`` counts. It measures, in one run:

single rule on an idle system
    ``--single`` rules applied one at a time, each after the previous one is Ready: latency
    from the create call's return to Ready (goal: p50 < 1 s, p99 < 3 s).
a burst
    ``--rules`` rules created at once from ``--threads`` threads: time from the first create
    to the last Ready, creation-to-Ready latency, the operator's Rucio calls per rule (its
    ``steward_rucio_api_calls`` gauge before and after) and its peak RSS (VmHWM).
the Rucio baseline
    the same number of rules on the same datasets created by `RucioStorage.add_rules` in
    batched calls (another RSE holding the same replicas, so they are not duplicates), just
    before and just after the burst.
the floor
    the Kubernetes side of the burst alone: the same resources created the same way (from
    ``--threads`` threads) in another namespace before the operator starts, then deleted.
    Measured before the operator starts and again once it stopped (the machine's load
    moves). The floor is the faster of the two plus the faster Rucio baseline, and the
    burst's time over it is the goal (<= 1.5x): on one machine both sides share the cores.
steady state
    after everything is Ready and one refresh interval has passed, the operator's Rucio calls
    over ``--steady-intervals`` refresh intervals, per resource and interval (goal: < 0.01),
    with the refresh passes counted to show the refresh loop did run.

metadata selection at scale (``--scale 1000,10000``, instead of the measures above)
    a scope of N existing datasets (10% ``datatype=raw``, spread over ten instruments, 0.1%
    excluded by ``archive=false``), ten ReplicationRules each selecting
    ``datatype=raw, instrument=camK`` minus the excluded (the shape of raw policies: an
    exclusion, so no Rucio subscription), then 100 new datasets (ten per policy). Rucio calls
    and seconds of one refresh tick of all ten policies (backfill, quiet, after the arrival,
    quiet again), whether the arrival was placed by that tick, and peak RSS, for the code of
    ``--before-ref`` (main by default, exported with ``git archive``) and this checkout, each
    in its own process against the same Rucio server (PostgreSQL: the instrument key is a JSON
    key) and data, through `ReplicationService` as the operator's refresh calls it, with one
    rule snapshot for the run whose clock moves a refresh interval per tick (its listing is
    timed apart, with the rules it returned; its full listing at start too). Kubernetes is
    not involved: the tick is the service's work.
    The incremental code runs without its overlap (the scope was registered a minute before,
    well within the default 300 s); everything else is as the operator configures it (the
    shared arrival listing too, where the code has one, on the same moving clock).

    **How the scope is written.** The first ``--scale-registered`` datasets (1,000) are
    registered through Rucio's API (``add_dids``, as ingest does); the rest are copies of
    their rows made in Rucio's PostgreSQL by one ``INSERT ... SELECT`` over ``dids`` and one
    over ``did_meta`` that copy every column and give each copy the next name, with the
    metadata the ``i``-th dataset would have had (it repeats every 1,000). Registering
    100,000 datasets through the API took 74 minutes on this machine under load; the copy
    takes seconds, and the ticks read the same rows. The copies are checked to behave as
    registered ones before any tick: a metadata listing finds the expected number, and a
    rule on a copy is created and OK. Then ``ANALYZE`` (a facility's database has its
    statistics current). With ``--scale-cold-copies`` the copies are ``datatype=calexp``, so
    every size selects the same 100 registered raw datasets and differs only by the datasets
    no policy selects (a backfill of 100 rules instead of 10% of the scope: 10,000 rules
    took over 25 minutes at load 25). With ``--rucio-index`` each code version, after its
    ticks, creates the two indexes that docs/replication.md asks a facility's Rucio DBA for
    ("Rucio database indexes for incremental selection"), ticks again (quiet, 100 more new
    datasets, quiet) and drops them, so one backfill measures both. The tick processes allow
    Rucio writes 600 s (``STEWARD_RUCIO_WRITE_TIMEOUT``): a backfill call creates 500 rules,
    and on this shared machine at load 20 one took longer than the default 30 s.

The operator runs with ``STEWARD_RUCIO_CALLS_PER_SECOND=--calls-per-second`` (1000 by
default: the benchmark measures the operator, not the cap; at Steward's default of 20 a second
the burst alone is bounded below by its Rucio calls / 20 seconds) and
``STEWARD_REFRESH_INTERVAL=--refresh-interval``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from steward.testing.childprocess import free_port, poll
from steward.testing.operatorprocess import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "steward.lsst.io", "v1alpha1", "replicationrules"
NAMESPACE = "bench"
FLOOR_NAMESPACE = "bench-floor"
"""Where the floor's resources are created (and deleted) before the operator starts."""
MOCK = "rucio.rse.protocols.mock.Default"
TARGET, BEFORE, AFTER = "BENCH_A", "BENCH_B", "BENCH_C"
"""The operator's destination, and the baseline's before and after the burst."""
REPLAY, COALESCED = "BENCH_D", "BENCH_E"
"""Destinations of the replays of the operator's pattern and of the coalesced one."""
RSES = (TARGET, BEFORE, AFTER, REPLAY, COALESCED)
SCOPE = "bench"
CHUNK = 500
"""DIDs per setup call: Rucio looks DIDs up with one OR term each, SQLite allows 1,000."""
TICK = os.sysconf("SC_CLK_TCK")
P50_GOAL, P99_GOAL, RATIO_GOAL, STEADY_GOAL = 1.0, 3.0, 1.5, 0.01
"""The issue's goals: single-rule seconds, burst over baseline, calls a resource an interval."""


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 20 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- processes ----------------------------------------------------------------------------------


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and all their descendants."""
    return sum(cpu_seconds(p) for root in pids for p in descendants(root))


def mentioning(text: str) -> list[str]:
    """Processes whose command line or environment contains ``text`` (leftover check)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


class Operator(OperatorProcess):
    """The operator process, with its metrics endpoint and memory read from outside."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(env, log)
        self.metrics = int(env["STEWARD_METRICS_PORT"])

    def scrape(self) -> dict[str, float]:
        """The operator's Prometheus metrics, ``name{labels}`` -> value."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics}/metrics", timeout=60
        ) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def calls(self) -> int:
        """Rucio API calls the operator has made."""
        return int(self.scrape()["steward_rucio_api_calls"])

    def peak_rss_kib(self) -> dict[int, int]:
        """VmHWM of the operator and each descendant, by pid."""
        return {pid: proc_status(pid, "VmHWM") for pid in descendants(self.pid)}


def reconcile_total(metrics: dict[str, float], part: str) -> float:
    """``steward_reconcile_seconds`` of ReplicationRules, its PART (sum or count), every outcome.

    The histogram is labelled by kind and outcome, so no single series holds the total.
    """
    prefix = f'steward_reconcile_seconds_{part}{{kind="ReplicationRule",'
    return sum(value for name, value in metrics.items() if name.startswith(prefix))


def refresh_gaps(first: dict[str, float], last: dict[str, float]) -> str:
    """``steward_refresh_gap_seconds`` of ReplicationRules between two scrapes.

    The mean, and the bucket bounds holding the median and the 90th percentile (the
    histogram's resolution).
    """
    family = "steward_refresh_gap_seconds"
    kind = 'kind="ReplicationRule"'

    def grown(name: str) -> float:
        return last.get(name, 0.0) - first.get(name, 0.0)

    prefix = f'{family}_bucket{{{kind},le="'
    buckets = sorted(
        (float(name[len(prefix) : -2]), grown(name)) for name in last if name.startswith(prefix)
    )
    count = grown(f"{family}_count{{{kind}}}")
    if count <= 0:
        return "no refresh pass"

    def bound(quantile: float) -> str:
        upper = next(le for le, cumulative in buckets if cumulative >= quantile * count)
        return "> 3600 s" if math.isinf(upper) else f"<= {upper:g} s"

    mean = grown(f"{family}_sum{{{kind}}}") / count
    return f"mean {mean:.1f} s, p50 {bound(0.5)}, p90 {bound(0.9)} ({count:.0f} refresh passes)"


def by_verb(operator: Operator) -> str:
    """The operator's Rucio calls of the run by verb, each with its failures by error class.

    From ``steward_rucio_calls_total`` and ``steward_rucio_errors_total``: a failure the
    adapter turns into an answer (an RSE expression selecting nothing) counts here too.
    """
    calls: dict[str, float] = {}
    errors: dict[str, list[str]] = {}
    pattern = re.compile(r"^steward_rucio_(calls|errors)_total\{(.*)\}$")
    for key, value in operator.scrape().items():
        found = pattern.match(key)
        if found is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
        if found.group(1) == "calls":
            calls[labels["operation"]] = value
        else:
            errors.setdefault(labels["operation"], []).append(f"{labels['error']} {value:.0f}")
    return ", ".join(
        f"{verb} {count:.0f}" + (f" ({', '.join(errors[verb])})" if verb in errors else "")
        for verb, count in sorted(calls.items(), key=lambda item: -item[1])
    )


# -- Kubernetes -----------------------------------------------------------------------------------


def is_ready(body: dict[str, Any]) -> bool:
    """Whether a ReplicationRule's Ready condition is True."""
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == "Ready":
            return item.get("status") == "True"
    return False


@dataclass
class ReadyWatch:
    """Records, through a watch, when each ReplicationRule of the namespace is first Ready."""

    api: Any
    ready: dict[str, float] = field(default_factory=dict)
    relisted: int = 0
    """Times the watch expired (410) and was replaced by a listing."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        """Start watching from the current state."""
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)
        self._thread.start()

    def _list(self) -> str:
        listing = self.api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        now = time.monotonic()
        for item in listing["items"]:
            self._seen(item, now)
        return str(listing["metadata"]["resourceVersion"])

    def _seen(self, body: dict[str, Any], now: float) -> None:
        if is_ready(body):
            with self._lock:
                self.ready.setdefault(body["metadata"]["name"], now)

    def _run(self) -> None:
        import kubernetes  # noqa: PLC0415

        try:
            version = self._list()
            while not self._stop.is_set():
                watch = kubernetes.watch.Watch()
                try:
                    for event in watch.stream(
                        self.api.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        NAMESPACE,
                        PLURAL,
                        resource_version=version,
                        timeout_seconds=5,
                        allow_watch_bookmarks=True,
                    ):
                        now = time.monotonic()
                        body = event["object"]
                        version = body.get("metadata", {}).get("resourceVersion", version)
                        if event["type"] in {"ADDED", "MODIFIED"}:
                            self._seen(body, now)
                        if self._stop.is_set():
                            watch.stop()
                except kubernetes.client.exceptions.ApiException as error:
                    if error.status != 410:  # noqa: PLR2004 - Gone: the version expired
                        raise
                    self.relisted += 1
                    version = self._list()
        except BaseException as error:  # noqa: BLE001 - reported by the waiting thread
            self.error = error

    def when(self, name: str) -> float | None:
        """When ``name`` was first seen Ready."""
        if self.error is not None:
            raise RuntimeError("the watch failed") from self.error
        with self._lock:
            return self.ready.get(name)

    def count(self, names: list[str]) -> int:
        """How many of ``names`` were seen Ready."""
        if self.error is not None:
            raise RuntimeError("the watch failed") from self.error
        with self._lock:
            return sum(1 for name in names if name in self.ready)

    def stop(self) -> None:
        """Stop the watch (within its 5-second server timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def bench_webhook(kind: str, failure: str, operations: list[str], address: str) -> dict[str, Any]:
    """One admission webhook for ReplicationRules of the bench namespace, as rendered."""
    return {
        "name": f"{kind}.{PLURAL}.{GROUP}",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure,
        "timeoutSeconds": 10,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "resources": [PLURAL],
                "operations": operations,
            }
        ],
        "clientConfig": {"url": f"https://127.0.0.1:{address}"},
    }


def create_retrying(objects: Any, body: dict[str, Any], failed: Counter[int]) -> None:  # noqa: ANN401
    """Create ``body`` in the bench namespace, again after each failure of a webhook.

    A webhook that did not answer in time fails the create (500); a GitOps tool retries
    its sync, so the bench retries a second later and counts each failure in ``failed``.
    """
    import kubernetes  # noqa: PLC0415

    while True:
        try:
            objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        except kubernetes.client.exceptions.ApiException as error:
            if error.status != HTTPStatus.INTERNAL_SERVER_ERROR:
                raise
            failed[error.status] += 1
            time.sleep(1.0)
        else:
            return


def rule_body(name: str, did: str) -> dict[str, Any]:
    """A ReplicationRule placing one dataset on the RSE that holds it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"dids": [did]}, "destination": TARGET},
    }


# -- Rucio ----------------------------------------------------------------------------------------


def site() -> Any:  # noqa: ANN401 - a Site
    """One mock site with five DISK RSEs (the replicas are on all of them)."""
    from steward.models.site import Site  # noqa: PLC0415

    return Site.model_validate(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Site",
            "metadata": {"name": "bench"},
            "spec": {
                "facility": "BENCH",
                "rses": [
                    {
                        "name": rse,
                        "type": "DISK",
                        "protocols": [
                            {
                                "scheme": "mock",
                                "hostname": "localhost",
                                "port": 0,
                                "prefix": f"/bench/{rse.lower()}",
                                "impl": MOCK,
                            }
                        ],
                    }
                    for rse in RSES
                ],
            },
        }
    )


def datasets(client: Any, count: int) -> list[str]:  # noqa: ANN401 - rucio's Client
    """``count`` datasets of one file, the file's replica on every bench RSE."""
    names = [f"ds-{i:05d}" for i in range(count)]
    for start in range(0, count, CHUNK):
        chunk = names[start : start + CHUNK]
        files = [
            {"scope": SCOPE, "name": f"{n}.f", "bytes": 100, "adler32": "00000001"} for n in chunk
        ]
        for rse in RSES:
            client.add_replicas(rse, files)
        client.add_dids([{"scope": SCOPE, "name": n, "type": "DATASET"} for n in chunk])
        client.attach_dids_to_dids(
            [
                {"scope": SCOPE, "name": n, "dids": [{"scope": SCOPE, "name": f"{n}.f"}]}
                for n in chunk
            ]
        )
    return [f"{SCOPE}:{n}" for n in names]


def kube_writes(api_client: Any) -> dict[str, float]:  # noqa: ANN401 - kubernetes ApiClient
    """Writes the API server has served, ``VERB resource[/subresource]`` -> count.

    From its ``apiserver_request_total`` metric, for ReplicationRules and Events only.
    """
    request = api_client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    text = api_client.call_api(*request).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("resource") not in {"replicationrules", "events"}:
            continue
        if labels.get("verb") not in {"POST", "PATCH", "PUT", "DELETE"}:
            continue
        sub = labels.get("subresource")
        key = f"{labels['verb']} {labels['resource']}{'/' + sub if sub else ''}"
        found[key] = found.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return found


def per_item(before: dict[str, float], after: dict[str, float], count: float) -> str:
    """The increase of each counter divided by ``count``, as text."""
    deltas = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))}
    return ", ".join(f"{k} {v / count:.2f}" for k, v in deltas.items() if v) or "none"


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Results:
    """What the run measured, for the table."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, value: str, goal: str = "", *, verdict: bool | None = None) -> None:
        """One row; ``verdict`` None when the number has no goal."""
        met = "" if verdict is None else ("met" if verdict else "MISSED")
        self.rows.append((what, value, goal, met))
        print(f"  {what}: {value}" + (f"  (goal {goal}: {met})" if goal else ""), flush=True)

    def table(self) -> None:
        """Print every row aligned."""
        widths = [max(len(row[i]) for row in [*self.rows, ("", "", "", "")]) for i in range(4)]
        print()
        print(
            "  ".join(
                h.ljust(w) for h, w in zip(("measure", "value", "goal", ""), widths, strict=True)
            )
        )
        print("  ".join("-" * w for w in widths))
        for row in self.rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for note in self.notes:
            print(f"* {note}")


@dataclass(frozen=True)
class Cost:
    """What a measured step took: wall seconds, and CPU seconds of the processes serving it."""

    seconds: float
    cpu: float

    @staticmethod
    def best(*costs: Cost) -> Cost:
        """The least seconds and the least CPU of repeated measures (the load only adds)."""
        return Cost(min(c.seconds for c in costs), min(c.cpu for c in costs))


def stamp(message: str) -> None:
    """Progress on stderr with the wall time."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


class Bench:
    """The running stack and the measurements."""

    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.results = Results()
        self.all_rules: list[str] = []
        self.api_client: Any = None
        self.kube_pids: list[int] = []
        self.rucio_pids: list[int] = []
        self.rss_start = 0.0
        """The operator's RSS (MiB) once started, before any resource."""

    def run(self) -> None:
        """Start everything, measure, print, tear down."""
        import kubernetes  # noqa: PLC0415

        from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR
        from steward.testing.controlplane import ControlPlane  # noqa: PLC0415
        from steward.testing.k8sbuild import ensure_binaries  # noqa: PLC0415
        from steward.testing.rucio_server import run_rucio_server  # noqa: PLC0415

        args = self.args
        with ExitStack() as stack:
            stamp("starting the control plane")
            plane = stack.enter_context(
                ControlPlane(binaries=ensure_binaries(), run_dir=self.base / "control-plane")
            )
            plane.create_nodes(1)
            plane.install_crds(REPO / "crds")
            api_client = stack.enter_context(
                kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
            )
            watch_client = stack.enter_context(
                kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
            )
            for namespace in (NAMESPACE, FLOOR_NAMESPACE):
                kubernetes.client.CoreV1Api(api_client).create_namespace(
                    {"metadata": {"name": namespace}}
                )
                plane.wait_for_service_account(namespace)

            stamp("starting the Rucio server")
            server = stack.enter_context(
                run_rucio_server(self.base / "rucio", database=args.database)
            )
            os.environ["RUCIO_CONFIG"] = str(server.config_path)
            from rucio.client import Client  # noqa: PLC0415 - the raw client, for bulk setup

            # A batch of 500 rules may take minutes on a loaded machine: no retry mid-baseline.
            storage = stack.enter_context(
                RucioStorage(server.settings(rucio_calls_per_second=1e9, rucio_write_timeout=900.0))
            )
            storage.register_site(site())
            storage.add_scope(SCOPE)
            stamp(f"creating {args.rules + args.single + 1} datasets")
            dids = datasets(Client(), args.rules + args.single + 1)
            single_dids, burst_dids = dids[: args.single + 1], dids[args.single + 1 :]
            objects = kubernetes.client.CustomObjectsApi(api_client)
            self.api_client = api_client
            self.serving(plane, server)
            floor = self.floor(objects, burst_dids, "before (no operator yet)")

            operator = self.start_operator(stack, plane.kubeconfig, server)
            watch = ReadyWatch(kubernetes.client.CustomObjectsApi(watch_client))
            watch.start()
            stack.callback(watch.stop)

            self.single(objects, watch, operator, single_dids)
            before = self.baseline(storage, burst_dids, BEFORE)
            if args.replay:
                self.probe(storage, single_dids)
                self.replay(storage, burst_dids)
                self.coalesced(storage, burst_dids)
            pids = {
                "operator": [operator.pid],
                "Rucio server": self.rucio_pids,
                "kube-apiserver+etcd": self.kube_pids,
            }
            burst = self.burst(objects, watch, operator, pids, burst_dids)
            after = self.baseline(storage, burst_dids, AFTER)
            self.steady(operator)
            self.finish(operator)
            operator.stop()
            floor_after = self.floor(objects, burst_dids, "after (operator stopped)")
            self.compare(burst, Cost.best(before, after), Cost.best(floor, floor_after))
            stamp("tearing down")

    def serving(self, plane: Any, server: Any) -> None:  # noqa: ANN401
        """Note the processes serving the API server and Rucio, whose CPU the bench reads."""
        components = {c.name: c.pid for c in plane.components()}
        self.kube_pids = [components["kube-apiserver"], components["etcd"]]
        self.rucio_pids = [pid for _, pid in server.processes()]

    def start_operator(self, stack: ExitStack, kubeconfig: Path, server: Any) -> Operator:  # noqa: ANN401
        """Migrate a fresh audit database and start the operator against the stack."""
        from steward.storage.database import make_engine, upgrade  # noqa: PLC0415

        args = self.args
        database = f"sqlite:///{self.base / 'operator-audit.db'}"
        engine = make_engine(database)
        upgrade(engine)
        engine.dispose()
        password = self.base / "rucio-password"
        password.write_text(server.password.get_secret_value())
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "STEWARD_RUCIO_HOST": server.host,
            "STEWARD_RUCIO_ACCOUNT": server.account,
            "STEWARD_RUCIO_USERNAME": server.username,
            "STEWARD_RUCIO_PASSWORD_FILE": str(password),
            "STEWARD_RUCIO_CALLS_PER_SECOND": str(args.calls_per_second),
            "STEWARD_DATABASE_URL": database,
            "STEWARD_REFRESH_INTERVAL": str(args.refresh_interval),
            "STEWARD_METRICS_PORT": str(free_port()),
            "STEWARD_WORKERS": str(args.workers),
        }
        if args.memory_probe is not None:
            args.memory_probe.mkdir(parents=True, exist_ok=True)
            probe = Path(__file__).with_name("memprobe")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(probe), env.get("PYTHONPATH")]))
            env["STEWARD_BENCH_MEMORY_DIR"] = str(args.memory_probe.resolve())
        if args.webhook or args.validate:
            env.update(self.webhook_configurations())
        env.update(item.split("=", 1) for item in args.operator_env)
        operator = Operator(env, self.base / "operator.log")
        stack.callback(operator.stop)
        stamp("starting the operator")
        operator.start()
        if args.memory_probe is not None:
            os.kill(operator.pid, signal.SIGUSR2)  # start tracing: the resources' allocations
        self.rss_start = self.rss(operator)
        self.results.add("operator RSS at start (no resource yet)", f"{self.rss_start:.0f} MiB")
        return operator

    def rss(self, operator: Operator) -> float:
        """The operator's RSS now (MiB), its children's included."""
        return sum(proc_status(pid, "VmRSS") for pid in descendants(operator.pid)) / 1024

    def memory(self, operator: Operator, when: str) -> None:
        """The operator's RSS now, and per resource; with ``--memory-probe``, where it goes."""
        rss = self.rss(operator)
        count = len(self.all_rules)
        self.results.add(
            f"operator RSS {when}",
            f"{rss:.0f} MiB, {(rss - self.rss_start) * 1024 / count:.1f} KiB per resource above "
            f"the start ({count} resources; 1-minute load average {os.getloadavg()[0]:.1f})",
        )
        directory = self.args.memory_probe
        if directory is None:
            return
        reports = len(list(directory.glob(f"memory-{operator.pid}-*.txt")))
        os.kill(operator.pid, signal.SIGUSR1)
        report = directory / f"memory-{operator.pid}-{reports + 1}.txt"
        poll(report.exists, timeout=600.0, what=f"the memory report {report}", interval=1.0)
        self.results.notes.append(f"memory report {when}: {report}")

    def webhook_configurations(self) -> dict[str, str]:
        """Deploy what the operator's webhook needs; return its settings (``--webhook``).

        As ``steward render`` ships them (templates/webhook.yaml.jinja, the empty Secret),
        for the bench namespace only: the mutating webhook puts kopf's finalizer on new
        ReplicationRules there (the floor's namespace is not selected, so the floor is the
        same with and without it), and the validating configuration has no webhooks (its
        checks are not what this measures; the operator keeps its caBundle current, so it
        must exist).
        """
        from kubernetes import client  # noqa: PLC0415

        from steward.handlers.admission import FINALIZE_IDS, WEBHOOK_IDS  # noqa: PLC0415

        core = client.CoreV1Api(self.api_client)
        admission = client.AdmissionregistrationV1Api(self.api_client)
        namespace, name, port = "bench-operator", "steward-bench", free_port()
        core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}})
        validating: dict[str, Any] = {"metadata": {"name": name}}
        if self.args.validate:
            path = WEBHOOK_IDS["ReplicationRule"]
            validating["webhooks"] = [
                bench_webhook("validate", "Fail", ["CREATE", "UPDATE"], f"{port}/{path}")
            ]
            # The review checks each destination against the Sites in the cluster.
            client.CustomObjectsApi(self.api_client).create_cluster_custom_object(
                GROUP,
                VERSION,
                "sites",
                site().model_dump(by_alias=True, mode="json", exclude_none=True),
            )
            self.results.notes.append("the validating webhook reviews every create")
        admission.create_validating_webhook_configuration(validating)
        finalize = bench_webhook("finalize", "Ignore", ["CREATE"], f"{port}/{FINALIZE_IDS[PLURAL]}")
        admission.create_mutating_webhook_configuration(
            {"metadata": {"name": name}, "webhooks": [{**finalize, "reinvocationPolicy": "Never"}]}
        )
        self.results.notes.append("the mutating webhook adds kopf's finalizer at creation")
        return {
            "STEWARD_OPERATOR_NAMESPACE": namespace,
            "STEWARD_WEBHOOK_PORT": str(port),
            "STEWARD_WEBHOOK_HOSTS": '["127.0.0.1"]',
            "STEWARD_WEBHOOK_SECRET": name,
            "STEWARD_WEBHOOK_CONFIGURATION": name,
        }

    def finish(self, operator: Operator) -> None:
        """Peak memory and the operator log's errors."""
        peak = operator.peak_rss_kib()
        now = sum(proc_status(pid, "VmRSS") for pid in peak)
        self.results.add(
            "operator peak RSS (VmHWM)",
            " + ".join(f"{kib / 1024:.0f} MiB" for kib in peak.values())
            + f" ({len(peak)} process{'es' if len(peak) > 1 else ''};"
            + f" RSS at the end {now / 1024:.0f} MiB)",
        )
        self.results.add("operator Rucio calls by verb (failed: by error class)", by_verb(operator))
        log = operator.log.read_text(errors="replace")
        errors = sum(1 for line in log.splitlines() if '"level": "error"' in line)
        self.results.notes.append(f"operator log: {errors} error lines")

    def single(self, objects: Any, watch: ReadyWatch, operator: Operator, dids: list[str]) -> None:  # noqa: ANN401
        """Apply rules one at a time; each waits for the previous one to be Ready."""
        stamp(f"single rules: a warm-up and {len(dids) - 1}, one at a time")
        # The first rule after start-up pays for the operator's watch starting (the API server
        # may answer 429 while a new CRD's storage initialises) and its first Rucio login.
        warm_up, dids = dids[0], dids[1:]
        objects.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, rule_body("warm-up", warm_up)
        )
        created = time.monotonic()
        ready = poll(
            lambda: watch.when("warm-up"),
            timeout=self.args.timeout,
            what="warm-up Ready",
            interval=0.005,
        )
        self.all_rules.append("warm-up")
        self.results.add("first rule after start-up (not counted)", f"{ready - created:.2f} s")
        latencies = []
        calls = operator.calls()
        for index, did in enumerate(dids):
            name = f"single-{index:03d}"
            objects.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, rule_body(name, did)
            )
            created = time.monotonic()
            ready = poll(
                lambda n=name: watch.when(n),
                timeout=self.args.timeout,
                what=f"{name} Ready",
                interval=0.005,
            )
            latencies.append(max(0.0, ready - created))
            self.all_rules.append(name)
        calls = operator.calls() - calls
        if not latencies:  # --single 0: only the burst is measured
            return
        values = ", ".join(f"{v:.2f}" for v in latencies)
        self.results.notes.append(f"single-rule latencies (s, in order): {values}")
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        self.results.add(
            f"single rule, p50 (N={len(dids)})", f"{p50:.2f} s", "< 1 s", verdict=p50 < P50_GOAL
        )
        self.results.add(
            f"single rule, p99 (N={len(dids)})", f"{p99:.2f} s", "< 3 s", verdict=p99 < P99_GOAL
        )
        self.results.add("single rule, Rucio calls per rule", f"{calls / len(dids):.2f}")

    def baseline(self, storage: Any, dids: list[str], rse: str) -> Cost:  # noqa: ANN401
        """Seconds `RucioStorage.add_rules` takes for these DIDs to ``rse`` (batched)."""
        from steward.storage.rucio import RuleSpec  # noqa: PLC0415

        stamp(f"baseline: add_rules of {len(dids)} DIDs to {rse}")
        calls = storage.api_calls
        cpu = tree_cpu(self.rucio_pids)
        start = time.perf_counter()
        added = storage.add_rules(
            dids, RuleSpec(rse, activity="Data Consolidation", comment=f"bench-baseline:{rse}")
        )
        seconds = time.perf_counter() - start
        cpu = tree_cpu(self.rucio_pids) - cpu
        assert len(added.created) == len(dids), "the baseline found existing rules"
        label = "before" if rse == BEFORE else "after"
        self.results.add(
            f"Rucio baseline {label} the burst",
            f"{seconds:.2f} s, {storage.api_calls - calls} calls, Rucio server CPU {cpu:.1f} s",
        )
        return Cost(seconds, cpu)

    def profile(self, operator: Operator) -> subprocess.Popen[bytes] | None:
        """Start py-spy on the operator when asked (it perturbs the numbers: for finding why)."""
        if self.args.py_spy is None:
            return None
        profile = self.base / "operator-burst.pyspy.txt"
        command = [str(self.args.py_spy), "record", "--idle", "--threads", "--format", "raw"]
        command += ["--rate", "50", "--pid", str(operator.pid), "--output", str(profile)]
        self.results.notes.append(f"py-spy profile of the burst: {profile}")
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def handler_times(self, before: dict[str, float], after: dict[str, float]) -> None:
        """How many reconciles ran between two scrapes, and their mean time in the handler."""
        spent = reconcile_total(after, "sum") - reconcile_total(before, "sum")
        handled = reconcile_total(after, "count") - reconcile_total(before, "count")
        if handled:
            self.results.add(
                "burst: reconciles, mean time in handler",
                f"{handled:.0f}, {spent / handled * 1000:.0f} ms",
            )

    def burst(
        self,
        objects: Any,  # noqa: ANN401
        watch: ReadyWatch,
        operator: Operator,
        pids: dict[str, list[int]],
        dids: list[str],
    ) -> Cost:
        """Create every rule at once; seconds from the first create to the last Ready."""
        args = self.args
        names = [f"rule-{i:05d}" for i in range(len(dids))]
        created: dict[str, float] = {}
        stamp(f"burst: {len(names)} rules from {args.threads} threads")
        cpu = {name: (lambda p=p: tree_cpu(p)) for name, p in pids.items()}
        cpu_before = {k: f() for k, f in cpu.items()}
        calls = operator.calls()
        metrics = operator.scrape()
        writes = kube_writes(self.api_client)

        failed: Counter[int] = Counter()

        def create(pair: tuple[str, str]) -> None:
            name, did = pair
            create_retrying(objects, rule_body(name, did), failed)
            created[name] = time.monotonic()

        profiler = self.profile(operator)
        load = os.getloadavg()[0]
        start = time.monotonic()
        try:
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(create, zip(names, dids, strict=True)))
            creating = time.monotonic() - start
            poll(
                lambda: watch.count(names) == len(names),
                timeout=max(args.timeout, 1.0 * len(names)),
                what=f"{len(names)} rules Ready",
                interval=0.2,
            )
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
        ready = {name: watch.when(name) for name in names}
        total = max(v for v in ready.values() if v is not None) - start
        latencies = [max(0.0, (ready[n] or 0.0) - created[n]) for n in names]
        calls = operator.calls() - calls
        after = operator.scrape()
        self.all_rules.extend(names)
        count = len(names)
        self.results.add(f"burst: {count} creates issued in", f"{creating:.2f} s")
        self.results.add(
            "burst: creates failed by a webhook (then retried)", str(sum(failed.values()))
        )
        self.results.add(
            "burst: first create to all Ready",
            f"{total:.2f} s (1-minute load average {load:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after)",
        )
        self.results.add("burst: creation->Ready p50", f"{percentile(latencies, 50):.2f} s")
        self.results.add("burst: creation->Ready p99", f"{percentile(latencies, 99):.2f} s")
        self.results.add(
            "burst: operator Rucio calls per rule", f"{calls / count:.2f} ({calls} calls)"
        )
        self.read_backs(metrics, after)
        self.handler_times(metrics, after)
        self.results.add(
            "burst: Kubernetes writes per rule (with the creates)",
            per_item(writes, kube_writes(self.api_client), count),
        )
        used_cpu = {k: f() - cpu_before[k] for k, f in cpu.items()}
        used = ", ".join(f"{k} {v:.0f} s" for k, v in used_cpu.items())
        self.results.add("burst: CPU seconds used", used)
        self.memory(operator, "after the burst")
        return Cost(total, sum(used_cpu.values()))

    def read_backs(self, before: dict[str, float], after: dict[str, float]) -> None:
        """How the burst's passes read their new rules back (`RecentRules` or by tag)."""
        ways = ("shared", "by-tag", "by-tag-after-shared")
        name = 'steward_rule_read_backs_total{{way="{}"}}'
        counts = {
            way: after.get(name.format(way), 0) - before.get(name.format(way), 0) for way in ways
        }
        self.results.add(
            "burst: read-backs of new rules",
            ", ".join(f"{way} {counts[way]:.0f}" for way in ways),
        )
        name = "steward_audit_transactions_total"
        self.results.add(
            "burst: audit transactions", f"{after.get(name, 0) - before.get(name, 0):.0f}"
        )

    def floor(self, objects: Any, dids: list[str], when: str) -> Cost:  # noqa: ANN401
        """Seconds to create the burst's resources with no operator running, as the burst does.

        Created in their own namespace from as many threads, then deleted (no finalizer holds
        them: no operator saw them), before the operator starts and again once it stopped.
        """
        args = self.args
        names = [f"rule-{i:05d}" for i in range(len(dids))]
        stamp(f"floor: {len(names)} resources from {args.threads} threads, no operator")

        def create(pair: tuple[str, str]) -> None:
            name, did = pair
            body = rule_body(name, did)
            body["metadata"]["namespace"] = FLOOR_NAMESPACE
            objects.create_namespaced_custom_object(GROUP, VERSION, FLOOR_NAMESPACE, PLURAL, body)

        cpu = tree_cpu(self.kube_pids)
        start = time.monotonic()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(create, zip(names, dids, strict=True)))
        seconds = time.monotonic() - start
        cpu = tree_cpu(self.kube_pids) - cpu
        objects.delete_collection_namespaced_custom_object(GROUP, VERSION, FLOOR_NAMESPACE, PLURAL)
        poll(
            lambda: (
                not objects.list_namespaced_custom_object(
                    GROUP, VERSION, FLOOR_NAMESPACE, PLURAL, limit=1
                )["items"]
            ),
            timeout=args.timeout,
            what="the floor's resources deleted",
            interval=0.5,
        )
        self.results.add(
            f"floor: the same creates, {when}",
            f"{seconds:.2f} s, kube-apiserver+etcd CPU {cpu:.1f} s",
        )
        return Cost(seconds, cpu)

    def compare(self, burst: Cost, rucio: Cost, kube: Cost) -> None:
        """The burst over the faster Rucio baseline, and over the floor (the goal).

        In seconds, and in CPU seconds of the serving processes (the operator, Rucio's
        server, kube-apiserver and etcd), which the other work on a shared machine moves
        less than the wall clock.
        """
        self.results.add(
            "burst / Rucio baseline (faster of the two)",
            f"{burst.seconds / rucio.seconds:.1f}x ({burst.seconds:.1f} s / {rucio.seconds:.2f} s)",
        )
        floor = kube.seconds + rucio.seconds
        ratio = burst.seconds / floor
        self.results.add(
            "burst / floor (creates without operator + Rucio baseline)",
            f"{ratio:.2f}x ({burst.seconds:.1f} s / ({kube.seconds:.2f} s + "
            f"{rucio.seconds:.2f} s))",
            "<= 1.5x",
            verdict=ratio <= RATIO_GOAL,
        )
        floor_cpu = kube.cpu + rucio.cpu
        self.results.add(
            "burst / floor in CPU seconds",
            f"{burst.cpu / floor_cpu:.2f}x ({burst.cpu:.0f} s / ({kube.cpu:.1f} s + "
            f"{rucio.cpu:.1f} s))",
        )

    def probe(self, storage: Any, dids: list[str]) -> None:  # noqa: ANN401
        """Sequential cost of one listing by owner tag and of one single-DID rule creation."""
        from steward.storage.rucio import RuleSpec  # noqa: PLC0415

        stamp(f"probe: {len(dids)} sequential listings by tag and single-DID adds")
        start = time.perf_counter()
        for did in dids:
            storage.list_rules(comment=f"bench-probe:{did}")
        listing = (time.perf_counter() - start) / len(dids)
        start = time.perf_counter()
        for did in dids:
            storage.add_rules([did], RuleSpec(REPLAY, activity="Data Consolidation"))
        adding = (time.perf_counter() - start) / len(dids)
        ids = [rule.id for rule in storage.list_rules(rse_expression=REPLAY)]
        start = time.perf_counter()
        for rule_id in ids:
            storage.update_rule(rule_id, comment=f"bench-probe:{rule_id}")
        updating = (time.perf_counter() - start) / len(ids)
        rules = len(storage.list_rules())
        self.results.add(
            "Rucio, one call at a time",
            f"list by tag {listing * 1000:.0f} ms, add one rule {adding * 1000:.0f} ms, "
            f"set one comment {updating * 1000:.0f} ms ({rules} rules in the account)",
        )

    def replay(self, storage: Any, dids: list[str]) -> None:  # noqa: ANN401
        """The operator's Rucio calls for new resources, without Kubernetes or kopf.

        A fresh reconcile lists the resource's rules by owner tag, adds the missing rule, and
        lists again for the status: three calls per resource. Replaying them from as many
        threads as the operator has workers shows what Rucio alone needs for that pattern (on
        another RSE, before the burst, so the operator's refresh is idle meanwhile).
        """
        from steward.storage.rucio import RuleSpec  # noqa: PLC0415

        threads = self.args.workers
        stamp(f"replay: list, add, list per DID to {REPLAY} from {threads} threads")
        spent = {"list": 0.0, "add": 0.0}
        lock = threading.Lock()

        def one(did: str) -> None:
            tag = f"bench-replay:{did}"
            timings = []
            for step in ("list", "add", "list"):
                begin = time.perf_counter()
                if step == "add":
                    spec = RuleSpec(REPLAY, activity="Data Consolidation", comment=tag)
                    storage.add_rules([did], spec)
                else:
                    storage.list_rules(comment=tag)
                timings.append((step, time.perf_counter() - begin))
            with lock:
                for step, seconds in timings:
                    spent[step] += seconds

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, dids))
        seconds = time.perf_counter() - start
        count = len(dids)
        self.results.add(
            f"replay of the operator's calls ({threads} threads)",
            f"{seconds:.2f} s; mean add {spent['add'] / count * 1000:.0f} ms, "
            f"list {spent['list'] / count / 2 * 1000:.0f} ms",
        )

    def coalesced(self, storage: Any, dids: list[str]) -> None:  # noqa: ANN401
        """What Rucio would need if the operator coalesced its workers' rule creations.

        A proposal, not what the operator does: the rules of as many resources as there are
        workers are created in one call under a neutral comment, then each resource sets its
        owner tag on its rule and lists its rules for the status (two cheap calls each).
        """
        from steward.storage.rucio import RuleSpec  # noqa: PLC0415

        threads = self.args.workers
        stamp(f"coalesced replay: add {threads} DIDs a call to {COALESCED}, then tag and list")
        spec = RuleSpec(COALESCED, activity="Data Consolidation", comment="bench-unclaimed")

        def claim(pair: tuple[str, str]) -> None:
            did, rule_id = pair
            tag = f"bench-coalesced:{did}"
            storage.update_rule(rule_id, comment=tag)
            storage.list_rules(comment=tag)

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            for begin in range(0, len(dids), threads):
                added = storage.add_rules(dids[begin : begin + threads], spec)
                list(pool.map(claim, added.rule_ids.items()))
        seconds = time.perf_counter() - start
        self.results.add(
            f"replay, coalesced {threads} DIDs a call (proposal)",
            f"{seconds:.2f} s",
        )

    def steady(self, operator: Operator) -> None:
        """Rucio calls per resource per refresh interval once everything is Ready."""
        args = self.args
        interval = args.refresh_interval
        stamp(f"steady state: settle {interval:.0f} s, measure {args.steady_intervals} intervals")
        time.sleep(interval)
        key = 'steward_reconciles_total{kind="ReplicationRule",outcome="success"}'
        first = operator.scrape()
        writes = kube_writes(self.api_client)
        cpu = cpu_seconds(operator.pid)
        window = interval * args.steady_intervals
        time.sleep(window)
        last = operator.scrape()
        cpu = cpu_seconds(operator.pid) - cpu
        writes = per_item(
            writes, kube_writes(self.api_client), len(self.all_rules) * args.steady_intervals
        )
        calls = last["steward_rucio_api_calls"] - first["steward_rucio_api_calls"]
        reconciles = last.get(key, 0) - first.get(key, 0)
        count = len(self.all_rules)
        per = calls / count / args.steady_intervals
        self.results.add(
            "steady: Rucio calls per resource per interval",
            f"{per:.4f} ({calls:.0f} calls, {count} resources, {args.steady_intervals} x "
            f"{interval:g} s)",
            "< 0.01",
            verdict=per < STEADY_GOAL,
        )
        self.results.add(
            "steady: refresh passes per resource per interval",
            f"{reconciles / count / args.steady_intervals:.2f}",
        )
        self.results.add("steady: time between a resource's passes", refresh_gaps(first, last))
        self.results.add("steady: Kubernetes writes per resource per interval", writes)
        self.results.add(
            "steady: operator CPU", f"{cpu / window * 100:.0f}% of one core ({cpu:.0f} s)"
        )
        self.memory(operator, "after the steady state")


# -- metadata selection at scale --------------------------------------------------------------

INSTRUMENTS = 10
NEW_DATASETS = 100


def scale_meta(index: int) -> dict[str, str]:
    """Metadata of the ``index``-th dataset of a scale scope (see the module docstring)."""
    raw = index % 10 == 0
    meta = {
        "datatype": "raw" if raw else "calexp",
        "instrument": f"cam{(index // 10) % INSTRUMENTS}",
    }
    if index % 1000 == 0:
        meta["archive"] = "false"
    return meta


def populate(client: Any, scope: str, names: list[str], meta: Any) -> None:  # noqa: ANN401 - rucio's Client, a function
    """Register empty datasets, the ``i``-th with ``meta(i)`` (a rule on one is OK at once)."""
    for offset in range(0, len(names), CHUNK):
        chunk = names[offset : offset + CHUNK]
        client.add_dids(
            [
                {"scope": scope, "name": name, "type": "DATASET", "meta": meta(offset + i)}
                for i, name in enumerate(chunk)
            ]
        )


DROP_INDEXES = ("DROP INDEX dids_scope_created_at_idx", "DROP INDEX did_meta_scope_updated_at_idx")
RUCIO_INDEXES = (
    "CREATE INDEX IF NOT EXISTS dids_scope_created_at_idx ON dids (scope, created_at)",
    "CREATE INDEX IF NOT EXISTS did_meta_scope_updated_at_idx ON did_meta (scope, updated_at)",
)
"""What docs/replication.md asks a facility's Rucio DBA to run (keep the two in step)."""


def rucio_sql(database_url: str, *statements: str) -> list[Any]:
    """Run statements in the bench's Rucio PostgreSQL database; the last one's rows."""
    import psycopg  # noqa: PLC0415 - PostgreSQL only

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    rows: list[Any] = []
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            cursor = connection.execute(statement)  # type: ignore[arg-type]
            rows = cursor.fetchall() if cursor.description else []
    return rows


def multiply(server: Any, scope: str, registered: int, size: int, *, cold: bool) -> None:  # noqa: ANN401 - a RucioServer
    """Copy the scope's ``registered`` datasets' rows up to ``size`` (see the docstring).

    Copy ``i`` is made from dataset ``i % registered`` (``registered`` a multiple of 1,000,
    so its metadata is what `scale_meta` gives ``i``), every column as it is but the name;
    ``cold`` copies are ``datatype=calexp`` (no policy selects them).
    """
    columns = {
        table: [
            row[0]
            for row in rucio_sql(
                server.database_url,
                "SELECT column_name FROM information_schema.columns "  # noqa: S608 - our names
                f"WHERE table_name = '{table}' AND table_schema = current_schema() "
                "ORDER BY ordinal_position",
            )
        ]
        for table in ("dids", "did_meta")
    }
    statements = []
    for table, names in columns.items():
        chosen = ", ".join(
            "'d' || lpad(g::text, 7, '0')"
            if column == "name"
            else "'calexp'"
            if cold and (table, column) == ("dids", "datatype")
            else f"s.{column}"
            for column in names
        )
        statements.append(
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {chosen} "  # noqa: S608 - ours
            f"FROM generate_series({registered}, {size - 1}) AS g "
            f"JOIN {table} s ON s.scope = '{scope}' "
            f"AND s.name = 'd' || lpad((g % {registered})::text, 7, '0')"
        )
    rucio_sql(server.database_url, *statements, "ANALYZE dids", "ANALYZE did_meta")


def check_copies(storage: Any, scope: str, size: int, rse: str, *, selected: int) -> str:  # noqa: ANN401 - the adapter
    """That copied datasets behave as registered ones: listed by metadata, a rule OK."""
    from steward.storage.rucio import RuleSpec  # noqa: PLC0415 - the code measured

    found = storage.list_dids(scope, {"datatype": "raw", "instrument": "cam3"})
    expected = sum(
        scale_meta(i) == {"datatype": "raw", "instrument": "cam3"} for i in range(selected)
    )
    if len(found) != expected:
        msg = f"{scope}: a listing found {len(found)} cam3 raw datasets, expected {expected}"
        raise RuntimeError(msg)
    copy = f"{scope}:d{size - 7:07d}"
    rule_id = storage.add_rules(
        [copy], RuleSpec(rse_expression=rse, copies=1, comment="bench-copy-check")
    ).rule_ids[copy]
    state = storage.get_rule(rule_id).state.value
    storage.delete_rule(rule_id)
    if state != "OK":
        msg = f"a rule on the copied {copy} is {state}, not OK"
        raise RuntimeError(msg)
    return f"{len(found)} of {expected} cam3 raw listed; a rule on {copy} was {state}"


def scale_policies(scope: str, destination: str) -> list[Any]:
    """The ten metadata-selected ReplicationRules of a scale run."""
    from steward.models.replication import ReplicationRule  # noqa: PLC0415 - the code measured

    return [
        ReplicationRule.model_validate(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ReplicationRule",
                "metadata": {"name": f"raw-cam{k}", "namespace": NAMESPACE, "uid": f"uid-{k}"},
                "spec": {
                    "selector": {
                        "scope": scope,
                        "match": {"datatype": "raw", "instrument": f"cam{k}"},
                        "exclude": [{"archive": "false"}],
                    },
                    "destination": destination,
                    "deletionPolicy": "Orphan",
                },
            }
        )
        for k in range(INSTRUMENTS)
    ]


def rucio_calls() -> float:
    """Rucio calls this process made so far (``steward_rucio_calls_total``, every verb)."""
    from steward.observability import RUCIO_CALLS  # noqa: PLC0415 - the code measured

    return sum(
        sample.value
        for metric in RUCIO_CALLS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def timed(work: Any) -> float:  # noqa: ANN401 - any callable
    """Seconds ``work()`` took."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def shared_snapshot(storage: Any) -> tuple[Any, dict[str, float]]:  # noqa: ANN401 - the code measured
    """The run's one rule snapshot, and its state: the clock (``now``), rules listed (``rows``).

    One snapshot for the run, as the operator keeps one, on a clock the caller moves by a
    refresh interval per tick: each tick's first use lists (every rule of the account before
    the incremental snapshot, what changed since after it). Without its overlap, for the
    same reason as the selection's: the rules were created a minute ago, not over years.
    """
    import inspect  # noqa: PLC0415
    from datetime import timedelta  # noqa: PLC0415

    from steward.services.replication import RuleSnapshot  # noqa: PLC0415 - the code measured

    state = {"now": 0.0, "rows": 0.0}

    class Counted:
        """The adapter as the snapshot sees it, counting the rules its listings return."""

        def list_rules(self, **filters: Any) -> list[Any]:  # noqa: ANN401 - the code measured
            rules = storage.list_rules(**filters)
            state["rows"] += len(rules)
            return list(rules)

    options: dict[str, Any] = {"max_age": 60.0, "clock": lambda: state["now"]}
    if "overlap" in inspect.signature(RuleSnapshot).parameters:
        options["overlap"] = timedelta(0)
    return RuleSnapshot(Counted(), **options), state


def shared_arrivals(storage: Any, state: dict[str, float]) -> dict[str, Any]:  # noqa: ANN401 - the code measured
    """The service's shared arrival listing, as the operator keeps one, where the code has it.

    Half the bench's 60 s interval, as the operator sets it, on the clock the ticks move.
    """
    try:
        from steward.services.arrivals import ArrivalFeed  # noqa: PLC0415 - the code measured
    except ImportError:  # the code before it
        return {}
    return {"arrivals": ArrivalFeed(storage, max_age=30.0, clock=lambda: state["now"])}


def arrival_ticks(
    storage: Any,  # noqa: ANN401 - the code measured
    config: dict[str, Any],
    policies: list[Any],
    tick: Any,  # noqa: ANN401 - the child's tick
    result: dict[str, Any],
    *,
    suffix: str,
) -> list[str]:
    """100 new datasets, the tick that should place them and a quiet tick after; their names."""
    from rucio.client import Client  # noqa: PLC0415

    from steward.services.ownership import owner_tag  # noqa: PLC0415 - the code measured

    scope, label = config["scope"], config["label"]
    arrivals = [f"new-{label}{suffix}-{i:03d}" for i in range(NEW_DATASETS)]
    populate(
        Client(),
        scope,
        arrivals,
        lambda i: {"datatype": "raw", "instrument": f"cam{i % INSTRUMENTS}"},
    )
    result[f"arrival{suffix}"] = tick(first=False)
    tags = {owner_tag(f"bench-{label}", policy.metadata.uid) for policy in policies}
    placed = {r.did for r in storage.list_rules(scope=scope) if r.comment in tags}
    result[f"arrivals_placed{suffix}"] = sum(f"{scope}:{name}" in placed for name in arrivals)
    result[f"quiet_after{suffix}"] = tick(first=False)
    return arrivals


def tick_child(config: dict[str, Any]) -> None:
    """One code version's ticks (``--tick-child``); prints one JSON line of measurements."""
    import json  # noqa: PLC0415
    import resource  # noqa: PLC0415
    from datetime import timedelta  # noqa: PLC0415

    from rucio.client import Client  # noqa: PLC0415

    import steward  # noqa: PLC0415
    from steward.config import Settings  # noqa: PLC0415
    from steward.services.audit import AuditService, ResourceRef  # noqa: PLC0415
    from steward.services.replication import ReplicationService  # noqa: PLC0415
    from steward.storage.database import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415

    engine = make_engine(config["database"])
    upgrade(engine)
    storage = RucioStorage(Settings())
    audit = AuditService(make_sessionmaker(engine))
    scope, label = config["scope"], config["label"]
    policies = scale_policies(scope, config["rse"])
    statuses: dict[str, dict[str, Any]] = {}
    # The whole scope was registered a minute ago: within the default overlap (300 s) an
    # incremental listing would take it all again. A facility's archive is older than that.
    options: dict[str, Any] = (
        {"overlap": timedelta(0)} if "overlap" in ReplicationService.__annotations__ else {}
    )

    snapshot, state = shared_snapshot(storage)
    options.update(shared_arrivals(storage, state))

    def tick(*, first: bool) -> dict[str, float]:
        state["now"] += 61.0
        service = ReplicationService(
            rucio=storage, audit=audit, snapshot=snapshot, cluster_id=f"bench-{label}", **options
        )
        before, rows, started = rucio_calls(), state["rows"], time.perf_counter()
        if not first:
            snapshot.rules("")  # the shared listing, timed apart
        listed = time.perf_counter() - started
        for policy in policies:
            ref = ResourceRef(
                kind="ReplicationRule",
                namespace=NAMESPACE,
                name=policy.metadata.name,
                uid=policy.metadata.uid,
                generation=1,
            )
            outcome = service.reconcile(
                policy, ref, statuses.get(ref.name), fresh=first, first_pass=first
            )
            statuses[ref.name] = dict(outcome.status)
        return {
            "calls": rucio_calls() - before,
            "seconds": time.perf_counter() - started,
            "snapshot": listed,
            "snapshot_rules": state["rows"] - rows,
        }

    result: dict[str, Any] = {"code": str(Path(steward.__file__).parent)}
    load = os.getloadavg()[0]
    result["backfill"] = tick(first=True)
    result["snapshot_start"] = timed(lambda: snapshot.rules(""))  # the operator's start
    result["quiet"] = tick(first=False)
    arrived = arrival_ticks(storage, config, policies, tick, result, suffix="")
    result["selected"] = sum(int(s.get("selected", 0)) for s in statuses.values())
    if config.get("index_url"):  # the same again with the indexes docs/replication.md asks for
        rucio_sql(config["index_url"], *RUCIO_INDEXES, "ANALYZE dids", "ANALYZE did_meta")
        result["quiet_indexed"] = tick(first=False)
        arrived += arrival_ticks(storage, config, policies, tick, result, suffix="_indexed")
        rucio_sql(config["index_url"], *DROP_INDEXES)  # the next code version starts without
    result["modes"] = sorted(
        {str((s.get("selection") or {}).get("mode", "Full")) for s in statuses.values()}
    )
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["load"] = f"{load:.1f} -> {os.getloadavg()[0]:.1f}"
    # Out of the next code version's selection, so both back-fill the same datasets.
    Client().set_dids_metadata_bulk(
        [{"scope": scope, "name": name, "meta": {"datatype": "calexp"}} for name in arrived]
    )
    print(json.dumps(result), flush=True)


def export_code(ref: str, base: Path) -> Path:
    """The ``operator/`` tree of git ``ref``, exported into ``base`` (its import root)."""
    target = base / f"code-{re.sub(r'[^A-Za-z0-9]+', '-', ref)}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "operator"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "operator"


def scale(args: argparse.Namespace, base: Path, results: Results) -> None:
    """Metadata selection at scale, for the code before and after (see the module docstring)."""
    import json  # noqa: PLC0415

    from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR
    from steward.testing.rucio_server import run_rucio_server  # noqa: PLC0415

    codes = {"before": export_code(args.before_ref, base), "after": REPO / "operator"}
    with ExitStack() as stack:
        stamp("starting the Rucio server (PostgreSQL)")
        server = stack.enter_context(run_rucio_server(base / "rucio", database="postgresql"))
        os.environ["RUCIO_CONFIG"] = str(server.config_path)
        from rucio.client import Client  # noqa: PLC0415 - the raw client, for bulk setup

        storage = stack.enter_context(RucioStorage(server.settings(rucio_calls_per_second=1e9)))
        storage.register_site(site())
        storage.allow_metadata_values("datatype", ["raw", "calexp"])
        password = base / "rucio-password"
        password.write_text(server.password.get_secret_value())
        env = {
            **os.environ,
            "STEWARD_RUCIO_HOST": server.host,
            "STEWARD_RUCIO_ACCOUNT": server.account,
            "STEWARD_RUCIO_USERNAME": server.username,
            "STEWARD_RUCIO_PASSWORD_FILE": str(password),
            "STEWARD_RUCIO_CALLS_PER_SECOND": "1e9",
            # The backfill creates 500 rules a call; at load 20 one took over the default 30 s.
            "STEWARD_RUCIO_WRITE_TIMEOUT": "600",
        }
        for size in args.scale:
            scope = f"scale{size}"
            storage.add_scope(scope)
            registered = min(size, args.scale_registered)
            stamp(f"registering {registered} datasets in {scope}")
            started = time.perf_counter()
            populate(Client(), scope, [f"d{i:07d}" for i in range(registered)], scale_meta)
            stamp(f"registered in {time.perf_counter() - started:.0f} s")
            if size > registered:
                started = time.perf_counter()
                multiply(server, scope, registered, size, cold=args.scale_cold_copies)
                stamp(f"copied to {size} in {time.perf_counter() - started:.0f} s")
                selected = registered if args.scale_cold_copies else size
                checked = check_copies(storage, scope, size, BEFORE, selected=selected)
                results.notes.append(f"{scope}: {checked}")
            for label, rse in (("before", BEFORE), ("after", AFTER)):
                if label not in args.scale_code:
                    continue
                config = {
                    "scope": scope,
                    "rse": rse,
                    "label": f"{label}-{size}",
                    "database": f"sqlite:///{base / f'audit-{label}-{size}.db'}",
                    "index_url": server.database_url if args.rucio_index else None,
                }
                stamp(f"{label}: ten policies over {size} datasets")
                child = subprocess.run(
                    [sys.executable, __file__, "--tick-child", json.dumps(config)],
                    env={**env, "PYTHONPATH": str(codes[label])},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode != 0:
                    results.notes.append(f"{label} at {size} failed: {child.stderr[-2000:]}")
                    continue
                measured = json.loads(child.stdout.strip().splitlines()[-1])
                report_scale(results, label, size, measured)


def report_scale(results: Results, label: str, size: int, measured: dict[str, Any]) -> None:
    """The rows of one code version at one scope size."""

    def tick(key: str) -> str:
        value = measured[key]
        text = f"{value['calls']:.0f} calls, {value['seconds']:.2f} s"
        if not value["snapshot"]:
            return text
        rules = value.get("snapshot_rules")
        listed = "" if rules is None else f", {rules:.0f} rules listed"
        return text + f" ({value['snapshot']:.2f} s rule snapshot{listed})"

    where = f"{label} @ {size:,}"
    results.add(f"{where}: backfill tick", tick("backfill"))
    results.add(f"{where}: rule snapshot at start", f"{measured['snapshot_start']:.2f} s")
    results.add(f"{where}: quiet tick", tick("quiet"))
    results.add(
        f"{where}: tick after 100 new datasets",
        f"{tick('arrival')}; {measured['arrivals_placed']}/100 placed by it",
    )
    results.add(f"{where}: quiet tick after", tick("quiet_after"))
    if "quiet_indexed" in measured:
        results.add(f"{where}, indexed: quiet tick", tick("quiet_indexed"))
        results.add(
            f"{where}, indexed: tick after 100 new datasets",
            f"{tick('arrival_indexed')}; {measured['arrivals_placed_indexed']}/100 placed by it",
        )
        results.add(f"{where}, indexed: quiet tick after", tick("quiet_after_indexed"))
    results.add(f"{where}: load average (1 min) at start and end", measured["load"])
    results.add(
        f"{where}: peak RSS",
        f"{measured['peak_rss_mib']:.0f} MiB (selected {measured['selected']}, modes "
        f"{'/'.join(measured['modes'])})",
    )


def scale_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--scale`` runs."""
    parser.add_argument(
        "--scale",
        type=lambda text: [int(n) for n in text.split(",")],
        help="measure metadata selection over scopes of these sizes instead (e.g. 1000,10000)",
    )
    parser.add_argument("--before-ref", default="main", help="git ref of the code before")
    parser.add_argument(
        "--scale-registered",
        type=int,
        default=1000,
        help="datasets of a --scale scope registered through Rucio's API (a multiple of "
        "1000); the rest are copies of their rows (see the docstring)",
    )
    parser.add_argument(
        "--scale-cold-copies",
        action="store_true",
        help="copies are datatype=calexp: every size selects the registered datasets' 10%% "
        "(a shorter backfill; the scope still holds every copy)",
    )
    parser.add_argument(
        "--scale-code",
        type=lambda text: text.split(","),
        default=["before", "after"],
        help="which code versions tick (before,after)",
    )
    parser.add_argument(
        "--rucio-index",
        action="store_true",
        help="with --scale, create the indexes docs/replication.md asks a Rucio DBA for",
    )


def webhook_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that serve the operator's admission webhooks to the bench namespace."""
    parser.add_argument(
        "--webhook",
        action="store_true",
        help="serve the mutating webhook (kopf's finalizer at creation) for the bench namespace",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="serve the validating webhook too (implies --webhook) for the bench namespace, as "
        "rendered (failurePolicy Fail, 10 s): a create it fails is retried and counted",
    )


def main() -> None:
    """Parse arguments; run in a fresh temporary directory (TMPDIR too); check for leftovers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rules", type=int, default=1000, help="rules in the burst")
    parser.add_argument("--single", type=int, default=20, help="rules applied one at a time")
    parser.add_argument("--threads", type=int, default=8, help="threads creating the burst")
    parser.add_argument("--refresh-interval", type=float, default=10.0)
    parser.add_argument("--steady-intervals", type=int, default=3)
    parser.add_argument("--calls-per-second", type=float, default=1000.0)
    parser.add_argument("--workers", type=int, default=8, help="STEWARD_WORKERS")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each wait")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--no-replay", dest="replay", action="store_false", help="skip the Rucio-only replay"
    )
    parser.add_argument("--py-spy", type=Path, help="profile the operator in the burst with it")
    parser.add_argument(
        "--memory-probe",
        type=Path,
        help="write where the operator's memory goes into this directory, after the burst and "
        "after the steady state (bench/memprobe: tracemalloc, which slows the operator)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the directory (logs)")
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set this in the operator's environment only (repeatable), e.g. an allocator's "
        "LD_PRELOAD, which the bench and its servers must not get",
    )
    webhook_arguments(parser)
    scale_arguments(parser)
    parser.add_argument("--tick-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tick_child:
        import json  # noqa: PLC0415

        tick_child(json.loads(args.tick_child))
        return
    base = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    (base / "tmp").mkdir()
    os.environ["TMPDIR"] = str(base / "tmp")  # Rucio's client caches tokens there
    tempfile.tempdir = None
    bench = Bench(args, base)
    if args.scale:
        print(f"Scale of metadata selection: before = {args.before_ref}, after = this checkout")
    print(
        f"Settings: STEWARD_RUCIO_CALLS_PER_SECOND={args.calls_per_second:g}, "
        f"STEWARD_REFRESH_INTERVAL={args.refresh_interval:g}, STEWARD_WORKERS={args.workers}, "
        f"{args.threads} creating threads, Rucio on {args.database} (2 gunicorn workers)"
        + "".join(f", operator {item}" for item in args.operator_env),
        flush=True,
    )
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    failed = True
    try:
        if args.scale:
            scale(args, base, bench.results)
        else:
            bench.run()
        failed = False
    finally:
        bench.results.notes.append(
            f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
        )
        bench.results.table()
        leftovers = wait_leftovers(str(base))
        print(f"leftover processes: {', '.join(leftovers) if leftovers else 'none'}")
        if failed or args.keep:
            print(f"logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def wait_leftovers(text: str, timeout: float = 15.0) -> list[str]:
    """Processes still mentioning ``text`` once they had ``timeout`` seconds to exit."""
    deadline = time.monotonic() + timeout
    while (found := mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


if __name__ == "__main__":
    main()
