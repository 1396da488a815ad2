"""Benchmark the campaign operator: Jobs for a large campaign, the ledger's write rate, memory.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/campaign.py``
(``--invocations 100000 --steps 3``; ``--help`` for the rest). It starts its own control plane
(``--nodes`` kwok nodes), a Rucio server (SQLite) and ``steward operator --standalone`` in a
temporary directory, and tears them down at the end. Inputs are not pre-staged and the kwok
stage is told to report no output files, so Rucio serves only the coverage query. Three parts:

Jobs for a large campaign
    One Campaign whose coverage is a Rucio query matching ``--invocations`` datasets (every
    dataset of the bench scope; registering them with metadata runs at ~60 a second here, so
    the query selects by scope alone) (a
    Campaign listing 100,000 data ids itself would be over the API server's 3 MiB request
    limit, and etcd's 1.5 MiB object limit) and ``--steps`` independent steps (so every
    step starts at once; ``parallelism: 1``, which keeps the pods few while the Jobs exist).
    Measured: Job objects per step (goal: at most ceil(invocations / shard size)), seconds
    from the create call to the last Job of each step created (goal: <= 30 s), seconds to
    enumerate the coverage set, the apiserver's objects (Jobs, ConfigMaps, pods) and the size
    of etcd's database, and the operator's peak RSS (goal: < 300 MB). The campaign is then
    paused (every Job suspended) and deleted.
completions end to end
    A Campaign of ``--run-invocations`` data ids over ``--steps`` steps in a chain, run to
    Succeeded on the kwok nodes: pods completed per second, and how far the ledger lags the
    pods (the newest recorded attempt against the newest ended pod).
the ledger alone
    The operator's recording path (classify, insert attempts, update invocations, one
    transaction a pass) fed ``--invocations`` synthetic ended pods in passes of
    ``--batch`` with the same database and code, timed: completions recorded per second
    (goal: >= 1,000/s). The control plane's controller manager creates pods at its default
    client rate (20 a second), far below that, so only this part can reach 100,000
    completions in reasonable time on a small machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from steward.testing.childprocess import poll
from steward.testing.operatorprocess import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "steward.lsst.io", "v1alpha1", "campaigns"
NAMESPACE = "bench"
SITE = "bench"
SCOPE = "bench"
CHUNK = 1000
"""Datasets per Rucio call when registering the coverage set."""
JOB_GOAL_SECONDS, LEDGER_GOAL_RATE, RSS_GOAL_MIB = 30.0, 1000.0, 300.0


def stamp(message: str) -> None:
    """Progress on stderr-like stdout, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def campaign(
    name: str,
    invocations: int,
    steps: int,
    *,
    chain: bool,
    query: bool = False,
    **step: Any,  # noqa: ANN401
) -> dict:
    """A Campaign of explicit data ids (or a query for datasets) whose pods report no outputs."""
    names = [f"step{i + 1}" for i in range(steps)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "site": SITE,
            "image": "example.org/pipelines:bench",
            "steps": [
                {
                    "name": n,
                    "pipeline": f"bench.yaml#{n}",
                    "resources": {"cpu": "10m", "memory": "64Mi"},
                    "dependsOn": [names[i - 1]] if chain and i else [],
                    "podAnnotations": {"kwok.steward.lsst.io/outputs": "0"},
                    **step,
                }
                for i, n in enumerate(names)
            ],
            "coverage": (
                {"query": {"scope": SCOPE, "match": {}}}
                if query
                else {"dataIds": [_data_id(i) for i in range(invocations)]}
            ),
            "inputs": {"prestage": False},
            "outputs": {"scope": "bench", "rse": "BENCH_DISK"},
        },
    }


def _data_id(index: int) -> dict[str, Any]:
    return {"instrument": "LSSTCam", "visit": 2026110100000 + index // 189, "detector": index % 189}


class Results:
    """Lines of the final table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, what: str, value: str, goal: str = "") -> None:
        """Record and print one measurement."""
        self.rows.append((what, value, goal))
        stamp(f"{what}: {value} {goal}")

    def table(self) -> None:
        """Print every measurement, aligned."""
        width = max(len(r[0]) for r in self.rows)
        print()
        for what, value, goal in self.rows:
            print(f"{what:<{width}}  {value}  {goal}")


class Bench:
    """The running stack and the measurements."""

    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.results = Results()
        self.last_job: dict[str, Any] = {}
        """Creation time of each step's last Job (the API server's clock, whole seconds)."""

    def run(self) -> None:
        """Start everything, measure, print, tear down."""
        import kubernetes  # noqa: PLC0415

        from steward.storage.database import make_engine, upgrade  # noqa: PLC0415
        from steward.testing.controlplane import ControlPlane  # noqa: PLC0415
        from steward.testing.k8sbuild import ensure_binaries  # noqa: PLC0415
        from steward.testing.rucio_server import run_rucio_server  # noqa: PLC0415

        args = self.args
        with ExitStack() as stack:
            stamp("starting the control plane")
            plane = stack.enter_context(
                ControlPlane(binaries=ensure_binaries(), run_dir=self.base / "control-plane")
            )
            plane.create_nodes(args.nodes)
            plane.install_crds(REPO / "crds")
            api = stack.enter_context(
                kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
            )
            kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
            # A campaign's Site must exist (admission, and the operator reads its batch
            # capacity): the NCSA site of sites/, renamed to the bench's site.
            site = yaml.safe_load((REPO / "sites" / "ncsa.yaml").read_text())
            site["metadata"]["name"] = SITE
            kubernetes.client.CustomObjectsApi(api).create_cluster_custom_object(
                GROUP, VERSION, "sites", site
            )
            plane.wait_for_service_account(NAMESPACE)
            stamp("starting the Rucio server")
            server = stack.enter_context(run_rucio_server(self.base / "rucio"))
            os.environ["RUCIO_CONFIG"] = str(server.config_path)
            from rucio.client import Client  # noqa: PLC0415 - the raw client, for bulk setup

            client = Client()
            client.add_scope(server.account, SCOPE)
            stamp(f"registering {args.invocations} datasets in Rucio (the coverage set)")
            for start in range(0, args.invocations, CHUNK):
                client.add_dids(
                    [
                        {"scope": SCOPE, "name": f"raw-{i:06d}", "type": "DATASET"}
                        for i in range(start, min(start + CHUNK, args.invocations))
                    ]
                )
            database = f"sqlite:///{self.base / 'operator.db'}"
            upgrade(make_engine(database))
            password = self.base / "rucio-password"
            password.write_text(server.password.get_secret_value())
            operator = OperatorProcess(
                {
                    **os.environ,
                    "KUBECONFIG": str(plane.kubeconfig),
                    "STEWARD_RUCIO_HOST": server.host,
                    "STEWARD_RUCIO_ACCOUNT": server.account,
                    "STEWARD_RUCIO_USERNAME": server.username,
                    "STEWARD_RUCIO_PASSWORD_FILE": str(password),
                    "STEWARD_RUCIO_CALLS_PER_SECOND": "1000",
                    "STEWARD_DATABASE_URL": database,
                    "STEWARD_SITE": SITE,
                    "STEWARD_CAMPAIGN_INTERVAL": str(args.interval),
                    "STEWARD_CLUSTER_ID": "bench",
                },
                self.base / "operator.log",
            )
            stack.callback(operator.stop)
            stamp("starting the operator")
            operator.start()
            etcd = next(c for c in plane.components() if c.name == "etcd")
            self.large(api, operator, etcd.health_url.rsplit("/", 1)[0])
            self.breakdown(database)
            self.completions(api, database)
            self.results.add(
                "operator peak RSS (VmHWM)",
                f"{proc_status(operator.pid, 'VmHWM') / 1024:.0f} MiB",
                f"(goal < {RSS_GOAL_MIB:.0f} MiB)",
            )
        self.ledger_alone()
        self.results.table()

    # -- part 1 ---------------------------------------------------------------------------------

    def large(self, api: Any, operator: OperatorProcess, etcd: str) -> None:  # noqa: ANN401
        """Jobs, objects and etcd for one large campaign."""
        import kubernetes  # noqa: PLC0415

        args = self.args
        objects = kubernetes.client.CustomObjectsApi(api)
        batch = kubernetes.client.BatchV1Api(api)
        before = etcd_size(etcd)
        body = campaign(
            "large", args.invocations, args.steps, chain=False, query=True, parallelism=1
        )
        body["spec"]["shardSize"] = args.shard_size
        stamp(f"creating a campaign of {args.invocations} invocations x {args.steps} steps")
        created_at = time.monotonic()
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        expected = math.ceil(args.invocations / args.shard_size)
        seen: dict[str, float] = {}

        def all_jobs() -> bool:
            for job in batch.list_namespaced_job(
                NAMESPACE, label_selector="steward.lsst.io/campaign=large"
            ).items:
                seen.setdefault(job.metadata.name, time.monotonic())
            return len(seen) >= expected * args.steps

        poll(all_jobs, timeout=600, what="every Job of the large campaign", interval=0.2)
        for job in batch.list_namespaced_job(
            NAMESPACE, label_selector="steward.lsst.io/campaign=large"
        ).items:
            step = job.metadata.labels["steward.lsst.io/step"]
            created = job.metadata.creation_timestamp
            self.last_job[step] = max(self.last_job.get(step, created), created)
        per_step: dict[str, list[float]] = {}
        for name, when in seen.items():
            step = name.rsplit("-", 1)[0].rsplit("-", 1)[-1]
            per_step.setdefault(step, []).append(when - created_at)
        self.results.add(
            "Jobs per step",
            ", ".join(f"{s}: {len(t)}" for s, t in sorted(per_step.items())),
            f"(goal <= ceil({args.invocations}/{args.shard_size}) = {expected})",
        )
        self.results.add(
            "seconds from create to the last Job of each step",
            ", ".join(f"{s}: {max(t):.1f}" for s, t in sorted(per_step.items())),
            f"(goal <= {JOB_GOAL_SECONDS:.0f} s; steps start together here)",
        )
        status = poll(
            lambda: (
                objects.get_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, "large"
                ).get("status")
                or {}
            ).get("invocations"),
            timeout=120,
            what="status of the large campaign",
        )
        self.results.add("invocations in status", str(status))
        core = kubernetes.client.CoreV1Api(api)
        counts = {
            "Jobs": len(batch.list_namespaced_job(NAMESPACE).items),
            "ConfigMaps": len(core.list_namespaced_config_map(NAMESPACE).items),
            "pods": len(core.list_namespaced_pod(NAMESPACE).items),
        }
        sizes = [
            len(json.dumps(cm.data or {}))
            for cm in core.list_namespaced_config_map(NAMESPACE).items
        ]
        self.results.add(
            "apiserver objects of the campaign",
            ", ".join(f"{k}: {v}" for k, v in counts.items())
            + f" (largest ConfigMap {max(sizes) / 1024:.0f} KiB)",
        )
        after = etcd_size(etcd)
        self.results.add(
            "etcd database size",
            f"{before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB with the campaign",
        )
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, "large", {"spec": {"desiredState": "Paused"}}
        )
        poll(
            lambda: all(j.spec.suspend for j in batch.list_namespaced_job(NAMESPACE).items),
            timeout=120,
            what="every Job suspended",
        )
        self.results.add(
            "operator RSS after the large campaign",
            f"{proc_status(operator.pid, 'VmRSS') / 1024:.0f} MiB",
        )
        objects.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "large")
        poll(
            lambda: not batch.list_namespaced_job(NAMESPACE).items,
            timeout=300,
            what="the large campaign's Jobs deleted",
        )

    def breakdown(self, database: str) -> None:
        """Where the time to the last Job went, from the operator's audit trail."""
        from steward.services.audit import AuditService  # noqa: PLC0415
        from steward.storage.audit import AuditFilter  # noqa: PLC0415
        from steward.storage.database import make_engine, make_sessionmaker  # noqa: PLC0415

        engine = make_engine(database)
        entries = AuditService(make_sessionmaker(engine)).query(AuditFilter(name="large"))
        engine.dispose()
        first = entries[0].time
        enumerated = next(e.time for e in entries if e.action == "campaign-enumerate")
        self.results.add(
            "enumerating the coverage set (Rucio listing, ledger rows)",
            f"{(enumerated - first).total_seconds():.1f} s",
        )
        spans = []
        for step in sorted({e.target for e in entries if e.action == "campaign-start-step"}):
            started = next(
                e.time for e in entries if e.action == "campaign-start-step" and e.target == step
            )
            last = self.last_job[step]
            started = started if started.tzinfo else started.replace(tzinfo=last.tzinfo)
            spans.append(f"{step}: {(last - started).total_seconds():.0f}")
        self.results.add(
            "seconds from a step's start (audit) to its last Job's creationTimestamp",
            ", ".join(spans),
            f"(goal <= {JOB_GOAL_SECONDS:.0f} s)",
        )

    # -- part 2 ---------------------------------------------------------------------------------

    def completions(self, api: Any, database: str) -> None:  # noqa: ANN401
        """Run a campaign to the end; completions per second and the ledger's lag."""
        import kubernetes  # noqa: PLC0415

        from steward.storage.database import make_engine, make_sessionmaker  # noqa: PLC0415
        from steward.storage.ledger import LedgerStore  # noqa: PLC0415

        args = self.args
        objects = kubernetes.client.CustomObjectsApi(api)
        body = campaign(
            "run", args.run_invocations, args.steps, chain=True, parallelism=args.parallelism
        )
        stamp(f"running a campaign of {args.run_invocations} invocations x {args.steps} steps")
        start = time.monotonic()
        uid = objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)[
            "metadata"
        ]["uid"]
        sessions = make_sessionmaker(make_engine(database))
        lags: list[float] = []
        core = kubernetes.client.CoreV1Api(api)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(2.0):
                ended = len(
                    core.list_namespaced_pod(
                        NAMESPACE,
                        label_selector=f"steward.lsst.io/campaign-uid={uid}",
                        field_selector="status.phase=Succeeded",
                    ).items
                )
                with sessions() as session:
                    recorded = sum(
                        1 for a in LedgerStore(session).attempts(uid) if a.klass == "Succeeded"
                    )
                lags.append(ended - recorded)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        poll(
            lambda: (
                (
                    objects.get_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, "run"
                    ).get("status")
                    or {}
                ).get("phase")
                == "Succeeded"
            ),
            timeout=3600,
            what="the run campaign to succeed",
            interval=1.0,
        )
        elapsed = time.monotonic() - start
        stop.set()
        thread.join()
        total = args.run_invocations * args.steps
        self.results.add(
            "end to end: completions recorded",
            f"{total} in {elapsed:.0f} s ({total / elapsed:.1f}/s, bounded by pod creation)",
        )
        median = sorted(lags)[len(lags) // 2] if lags else 0
        self.results.add(
            "ledger lag behind ended pods (sampled every 2 s)",
            f"max {max(lags, default=0)} pods, median {median}",
        )

    # -- part 3 ---------------------------------------------------------------------------------

    def ledger_alone(self) -> None:
        """The recording path fed synthetic ended pods, in passes of ``--batch``."""
        from steward.services.audit import AuditService, ResourceRef  # noqa: PLC0415
        from steward.services.campaign.record import Recorder  # noqa: PLC0415
        from steward.storage.database import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415
        from steward.storage.ledger import LedgerCampaign, LedgerStore  # noqa: PLC0415

        args = self.args
        engine = make_engine(f"sqlite:///{self.base / 'ledger-alone.db'}")
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        uid = secrets.token_hex(8)
        body = campaign("ledger", args.invocations, 1, chain=False, query=True)
        data_ids = [_data_id(i) for i in range(args.invocations)]
        from steward.models.campaign import Campaign  # noqa: PLC0415
        from steward.services.campaign.base import CampaignPass  # noqa: PLC0415
        from steward.services.campaign.plan import canonical_json, data_id_hash  # noqa: PLC0415

        parsed = Campaign.model_validate(body)
        ref = ResourceRef(kind="Campaign", namespace=NAMESPACE, name="ledger", uid=uid)
        stamp(f"enumerating {args.invocations} invocations into a fresh ledger")
        started = time.monotonic()
        with sessions.begin() as session:
            store = LedgerStore(session)
            store.add_campaign(
                LedgerCampaign(
                    uid=uid,
                    namespace=NAMESPACE,
                    name="ledger",
                    site=SITE,
                    output_scope="bench",
                    invocations=args.invocations,
                    steps='["step1"]',
                    shard_size=args.shard_size,
                    created_at=_now(),
                    staging_released=False,
                )
            )
            store.add_invocations(
                [
                    {
                        "campaign_uid": uid,
                        "step": "step1",
                        "index": i,
                        "shard": i // args.shard_size,
                        "data_id": canonical_json(d),
                        "data_id_hash": data_id_hash(d),
                        "state": "queued",
                        "job": f"ledger-step1-{i // args.shard_size}",
                        "memory": 64 * 2**20,
                        "attempts": 0,
                        "failures": 0,
                    }
                    for i, d in enumerate(data_ids)
                ]
            )
        self.results.add(
            f"ledger: enumerate {args.invocations} invocations",
            f"{time.monotonic() - started:.1f} s",
        )
        pods = SyntheticPods(uid, args.invocations, args.shard_size, args.batch)
        recorder = Recorder(
            batch=pods,
            resources=None,
            rucio=None,
            sessions=sessions,
            audit=AuditService(sessions),
            cluster_id="bench",
        )
        stamp(f"recording {args.invocations} completions, {args.batch} a pass")
        started = time.monotonic()
        passes = 0
        while pods.remaining():
            work = CampaignPass(
                campaign=parsed, ref=ref, uid=uid, namespace=NAMESPACE, tag="", now=_now()
            )
            recorder._observe(work)  # noqa: SLF001 - the operator's own recording pass
            passes += 1
        elapsed = time.monotonic() - started
        with sessions() as session:
            done = LedgerStore(session).state_counts(uid)["step1"].get("succeeded", 0)
        rate = done / elapsed
        self.results.add(
            f"ledger alone: {done} completions recorded",
            f"{elapsed:.1f} s in {passes} passes ({rate:,.0f}/s)",
            f"(goal >= {LEDGER_GOAL_RATE:,.0f}/s)",
        )
        engine.dispose()


def _now() -> Any:  # noqa: ANN401
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


class SyntheticPods:
    """Stands in for the API server's ended pods in part 3 (the recording path alone)."""

    def __init__(self, uid: str, total: int, shard_size: int, batch: int) -> None:
        self.uid, self.total, self.shard_size, self.batch = uid, total, shard_size, batch
        self.next = 0

    def remaining(self) -> bool:
        """Whether pods are left to hand out."""
        return self.next < self.total

    def list_jobs(self, _namespace: str, _labels: Mapping[str, str]) -> list[dict]:
        """No Jobs: the recording path does not need them."""
        return []

    def ended_pods(self, _namespace: str, _labels: Mapping[str, str]) -> list[dict]:
        """The next ``batch`` pods, ended."""
        end = min(self.next + self.batch, self.total)
        pods = [self.pod(i) for i in range(self.next, end)]
        self.next = end
        return pods

    def mark_recorded(self, pods: Sequence[Mapping[str, Any]]) -> int:
        """Nothing to patch: these pods exist only here."""
        return len(pods)

    def pod(self, index: int) -> dict[str, Any]:
        """An ended pod of invocation ``index``, as the API would list it."""
        shard = index // self.shard_size
        first = shard * self.shard_size
        last = min(first + self.shard_size, self.total) - 1
        job = f"ledger-step1-{shard}"
        return {
            "metadata": {
                "name": f"{job}-{index - first}-abcde",
                "namespace": NAMESPACE,
                "uid": f"{self.uid}-{index}",
                "labels": {"steward.lsst.io/step": "step1", "steward.lsst.io/job": job},
                "annotations": {
                    "batch.kubernetes.io/job-completion-index": str(index - first),
                    "steward.lsst.io/invocations": f"{first}-{last}",
                },
            },
            "spec": {
                "nodeName": f"kwok-node-{index % 7}",
                "containers": [{"name": "pipeline", "resources": {"limits": {"memory": "64Mi"}}}],
            },
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "pipeline",
                        "state": {
                            "terminated": {
                                "exitCode": 0,
                                "reason": "Completed",
                                "message": '{"files":[]}',
                                "startedAt": "2026-11-24T10:00:00Z",
                                "finishedAt": "2026-11-24T10:01:00Z",
                            }
                        },
                    }
                ],
            },
        }


def etcd_size(base_url: str) -> float:
    """Size of etcd's database in bytes, from its metrics."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:  # noqa: S310 - our own etcd
        for line in response.read().decode().splitlines():
            if line.startswith("etcd_mvcc_db_total_size_in_bytes "):
                return float(line.split()[1])
    return float("nan")


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=5000)
    parser.add_argument("--run-invocations", type=int, default=300)
    parser.add_argument("--parallelism", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000, help="ended pods per recording pass")
    parser.add_argument("--interval", type=float, default=1.0, help="STEWARD_CAMPAIGN_INTERVAL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="steward-bench-campaign-") as base:
        Bench(args, Path(base)).run()


if __name__ == "__main__":
    main()
