"""Benchmark Kueue's admission against plain Jobs on the same kwok nodes, in one run.

Prints numbers; it is not a test. Run it with ``.venv/bin/python bench/kueue.py`` (``--help``
for the sizes). It starts its own control plane with ``--nodes`` kwok nodes and Kueue on it
(`steward.testing.kueue`), renders one Site's queue with Steward's queueing service (quota
for every node, so quota never holds anything back: what is measured is admission itself), and
then runs the same workload twice, each in its own namespace:

plain
    ``--jobs`` Indexed Jobs of ``--completions`` invocations each (10,000 by default), with
    ``--parallelism``, and no queue label: the Job controller starts them at once.
kueue
    the same Jobs labelled with the site's LocalQueue and a WorkloadPriorityClass: Kueue's
    webhook suspends each, Kueue creates its Workload, admits it against the quota and
    unsuspends it.

For each it prints the time from the first create call to every Job started (plain: the Job
has a start time; kueue: its Workload is Admitted and the Job is unsuspended), to every Job
complete, and the API server's stored objects afterwards (its ``apiserver_resource_objects``
metric: pods, Jobs, Workloads, Events; cumulative over both runs). The goal of the issue:
Kueue adds under 20% to time-to-complete. The order of the two runs is alternated with
``--kueue-first`` to check for drift.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from steward.services.queueing import QueueingService, job_labels
from steward.storage.kueue import KueueStorage
from steward.testing.controlplane import ControlPlane
from steward.testing.k8sbuild import ensure_binaries, ensure_kueue
from steward.testing.kueue import POOL_LABELS, QUEUEING_STAGES, Kueue, batch_site

GOAL = 1.20
"""Kueue's time-to-complete over plain Jobs' (the issue: under 20% more)."""


@dataclass
class Result:
    """One run's timings and object counts."""

    name: str
    started: float
    complete: float
    objects: dict[str, int]


def job(name: str, args: argparse.Namespace, labels: dict[str, str]) -> dict[str, Any]:
    """One Indexed Job of the benchmark; its pods succeed as soon as kwok runs them."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": args.completions,
            "parallelism": args.parallelism,
            "backoffLimitPerIndex": 1,
            "podReplacementPolicy": "Failed",
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ],
                }
            },
        },
    }


WATCHED: dict[tuple[str, str], str] = {
    ("", "pods"): "pods",
    ("batch", "jobs"): "jobs",
    ("kueue.x-k8s.io", "workloads"): "workloads",
    ("", "events"): "events",
}
"""The objects counted after each run: (API group, resource) -> name in the output."""


def storage_objects(plane: ControlPlane) -> dict[str, int]:
    """The API server's stored objects by resource (``apiserver_resource_objects``)."""
    text = plane.request_text("/metrics")
    counts = {}
    pattern = r'^apiserver_resource_objects\{group="([^"]*)",resource="([^"]+)"\} (\S+)$'
    for match in re.finditer(pattern, text, re.MULTILINE):
        name = WATCHED.get((match.group(1), match.group(2)))
        if name is not None:
            counts[name] = int(float(match.group(3)))
    return counts


def run(  # noqa: PLR0917 - one call site, each argument a different thing
    name: str,
    api: kubernetes.client.ApiClient,
    plane: ControlPlane,
    queueing: QueueingService,
    args: argparse.Namespace,
    labels: dict[str, str],
) -> Result:
    """Create the Jobs in namespace NAME and time them to started and to complete."""
    core = kubernetes.client.CoreV1Api(api)
    batch = kubernetes.client.BatchV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    plane.wait_for_service_account(name)
    if labels:
        queueing.ensure_local_queues(args.site, name)
    names = [f"{name}-{index:04d}" for index in range(args.jobs)]
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: batch.create_namespaced_job(name, job(n, args, labels)), names))
    created = time.monotonic() - start
    started_at = complete_at = None
    while complete_at is None:
        jobs = batch.list_namespaced_job(name).items
        if (
            started_at is None
            and len(jobs) == args.jobs
            and all(j.status.start_time is not None and not j.spec.suspend for j in jobs)
        ):
            if labels:
                states = queueing.workloads(name)
                if len(states) == args.jobs and all(
                    s.phase in {"Admitted", "Finished"} for s in states
                ):
                    started_at = time.monotonic() - start
            else:
                started_at = time.monotonic() - start
        if (
            all(
                any(c.type == "Complete" and c.status == "True" for c in j.status.conditions or [])
                for j in jobs
            )
            and len(jobs) == args.jobs
        ):
            complete_at = time.monotonic() - start
            started_at = started_at or complete_at
        if time.monotonic() - start > args.timeout:
            raise SystemExit(f"{name}: not complete within {args.timeout} s")
        time.sleep(0.5)
    print(f"  {name}: created {args.jobs} Jobs in {created:.1f} s", flush=True)
    return Result(name, started_at, complete_at, storage_objects(plane))


def main() -> int:
    """Run both, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--completions", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--kueue-first", action="store_true")
    args = parser.parse_args()
    invocations = args.jobs * args.completions
    print(
        f"{invocations} invocations: {args.jobs} Indexed Jobs x {args.completions}, "
        f"parallelism {args.parallelism}, on {args.nodes} kwok nodes",
        flush=True,
    )
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="steward-bench-") as tmp:
        plane = stack.enter_context(
            ControlPlane(
                binaries=ensure_binaries(),
                run_dir=Path(tmp) / "plane",
                stages=[QUEUEING_STAGES],
                start_timeout=120,
            )
        )
        plane.create_nodes(args.nodes, labels=POOL_LABELS, timeout=300)
        kueue_started = time.monotonic()
        stack.enter_context(Kueue(plane, build=ensure_kueue()))
        print(f"Kueue started in {time.monotonic() - kueue_started:.1f} s", flush=True)
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        stack.callback(api.close)
        queueing = QueueingService(KueueStorage(api))
        args.site = batch_site(
            "bench", {"prod": {"cpu": str(32 * args.nodes), "memory": f"{256 * args.nodes}Gi"}}
        )
        queueing.reconcile_site(args.site)
        queue = f"{args.site.metadata.name}-prod"
        order = [("kueue", job_labels(queue, "normal")), ("plain", {})]
        if not args.kueue_first:
            order.reverse()
        results = {name: run(name, api, plane, queueing, args, labels) for name, labels in order}
    plain, kueue = results["plain"], results["kueue"]
    print(f"{'':8} {'started s':>10} {'complete s':>11}  objects after the run")
    for result in (plain, kueue):
        print(f"{result.name:8} {result.started:10.1f} {result.complete:11.1f}  {result.objects}")
    ratio = kueue.complete / plain.complete
    verdict = "meets" if ratio < GOAL else "misses"
    print(
        f"Kueue's time to complete is {ratio:.2f}x plain Jobs' ({verdict} the goal of "
        f"< {GOAL:.2f}x); to all started {kueue.started / plain.started:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
