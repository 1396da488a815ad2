"""The crash test at full size: 1,000 ReplicationRules, the operator SIGKILLed 20 times.

Prints numbers and a verdict; it is not a test (tests/e2e runs the same kills over fewer
resources, sized for CI). Run it with ``.venv/bin/python bench/crashes.py`` (``--resources``,
``--kills``, ``--seed``; ``--help`` for the rest). It starts its own control plane, Rucio
server (SQLite) and operator in a temporary directory, as ``bench/reconcile.py`` does, and
tears them down at the end.

The resources arrive in one wave per kill. Each kill comes after a random delay, in a burst of
Rucio calls or in a burst of status writes (`steward.testing.crashes`); after the last start
the script waits until every resource owns its rule, then checks Rucio and the audit trail:
exactly one rule per (DID, resource), no rule without its owner, a success row for every rule,
an intact chain.

Measured 2026-12-01 on the shared 2-core machine (load average 9-11 throughout), defaults
(``--resources 1000 --kills 20 --seed 20261201``): 7 kills after a delay, 7 in a burst of Rucio
calls, 6 in a burst of status writes, all at their moment; operator start to liveness p50
7.9 s, max 12.7 s; kill loop 281 s; last start to convergence 139 s; 1,000 rules, 0
duplicates, 0 unowned, 0 missing, 0 unaudited, 0 audit chain findings; 76 rules taken back
(``rucio.rule.adopt``) after a crash had cut their pass short. Verdict PASS.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from reconcile import (
    GROUP,
    NAMESPACE,
    PLURAL,
    REPO,
    SCOPE,
    VERSION,
    datasets,
    percentile,
    rule_body,
    site,
    stamp,
    wait_leftovers,
)
from steward.testing.childprocess import poll
from steward.testing.operatorprocess import OperatorProcess


def statuses(objects: Any) -> dict[str, dict[str, Any]]:  # noqa: ANN401 - CustomObjectsApi
    """Status of every ReplicationRule of the namespace, by name."""
    listed = objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    return {item["metadata"]["name"]: item.get("status") or {} for item in listed["items"]}


def owning(objects: Any) -> int:  # noqa: ANN401 - CustomObjectsApi
    """Resources whose status names their rule."""
    return sum(1 for status in statuses(objects).values() if status.get("ruleIds"))


def run(args: argparse.Namespace, base: Path) -> None:  # noqa: PLR0915 - one linear script
    """Start the stack, crash the operator, wait for convergence, check, print."""
    import kubernetes  # noqa: PLC0415

    from steward.services.audit import AuditService  # noqa: PLC0415
    from steward.services.ownership import owner_tag  # noqa: PLC0415
    from steward.storage.database import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415
    from steward.storage.kubernetes import cluster_identity  # noqa: PLC0415
    from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - after TMPDIR
    from steward.testing.controlplane import ControlPlane  # noqa: PLC0415
    from steward.testing.crashes import (  # noqa: PLC0415
        crash_outcome,
        crash_repeatedly,
        kill_plan,
    )
    from steward.testing.k8sbuild import ensure_binaries  # noqa: PLC0415
    from steward.testing.rucio_server import run_rucio_server  # noqa: PLC0415

    with ExitStack() as stack:
        stamp("starting the control plane")
        plane = stack.enter_context(
            ControlPlane(binaries=ensure_binaries(), run_dir=base / "control-plane")
        )
        plane.create_nodes(1)
        plane.install_crds(REPO / "crds")
        api_client = stack.enter_context(
            kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        )
        kubernetes.client.CoreV1Api(api_client).create_namespace({"metadata": {"name": NAMESPACE}})
        plane.wait_for_service_account(NAMESPACE)
        objects = kubernetes.client.CustomObjectsApi(api_client)

        stamp("starting the Rucio server")
        server = stack.enter_context(run_rucio_server(base / "rucio", database="sqlite"))
        os.environ["RUCIO_CONFIG"] = str(server.config_path)
        from rucio.client import Client  # noqa: PLC0415 - the raw client, for bulk setup

        storage = stack.enter_context(RucioStorage(server.settings(rucio_calls_per_second=1e9)))
        storage.register_site(site())
        storage.add_scope(SCOPE)
        stamp(f"creating {args.resources} datasets")
        dids = datasets(Client(), args.resources)

        database = f"sqlite:///{base / 'operator-audit.db'}"
        engine = make_engine(database)
        stack.callback(engine.dispose)
        upgrade(engine)
        password = base / "rucio-password"
        password.write_text(server.password.get_secret_value())
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "STEWARD_RUCIO_HOST": server.host,
            "STEWARD_RUCIO_ACCOUNT": server.account,
            "STEWARD_RUCIO_USERNAME": server.username,
            "STEWARD_RUCIO_PASSWORD_FILE": str(password),
            "STEWARD_RUCIO_CALLS_PER_SECOND": str(args.calls_per_second),
            "STEWARD_DATABASE_URL": database,
            "STEWARD_REFRESH_INTERVAL": str(args.refresh_interval),
        }
        operator = OperatorProcess(env, base / "operator.log")
        stack.callback(operator.stop)

        names = [f"crash-{i:04d}" for i in range(args.resources)]
        waves = [names[i :: args.kills] for i in range(args.kills)]
        created: dict[str, dict[str, Any]] = {}

        def wave(index: int) -> None:
            for name in waves[index]:
                created[name] = objects.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, rule_body(name, dids[names.index(name)])
                )

        plan = kill_plan(
            args.kills,
            random.Random(args.seed),  # noqa: S311 - a reproducible schedule, not secrets
            max_calls=args.resources // 10,
            max_statuses=max(1, args.resources // args.kills),
        )
        stamp(f"{args.kills} kills over {args.resources} resources arriving in waves")
        started = time.monotonic()
        crashes = crash_repeatedly(
            operator, plan, statuses=lambda: owning(objects), before_each=wave, deadline=30
        )
        last_start = time.monotonic()
        stamp("waiting for every resource to own its rule")

        def converged() -> bool:
            return all(
                status.get("ruleIds") and len(status["ruleIds"]) == status.get("selected")
                for status in statuses(objects).values()
            ) and len(statuses(objects)) == len(names)

        poll(converged, timeout=args.timeout, what="convergence", interval=1.0)
        done = time.monotonic()
        cluster = cluster_identity(api_client)
        expected = {
            owner_tag(cluster, body["metadata"]["uid"]): (
                body["metadata"]["uid"],
                dids[names.index(name)],
            )
            for name, body in created.items()
        }
        outcome = crash_outcome(
            storage.list_rules(scope=SCOPE),
            expected,
            AuditService(make_sessionmaker(engine)),
            NAMESPACE,
        )
        _report(args, crashes, outcome, kill_loop=last_start - started, converge=done - last_start)


def _report(
    args: argparse.Namespace,
    crashes: list[Any],
    outcome: Any,  # noqa: ANN401 - CrashOutcome
    *,
    kill_loop: float,
    converge: float,
) -> None:
    starts = [crash.start_seconds for crash in crashes]
    print(f"\nresources {args.resources}, kills {len(crashes)}, seed {args.seed}")
    for moment in {crash.kill.moment for crash in crashes}:
        mine = [crash for crash in crashes if crash.kill.moment is moment]
        reached = sum(1 for crash in mine if crash.reached)
        print(f"  kills {moment.value}: {len(mine)} ({reached} at their moment)")
    print(
        f"operator start to liveness: p50 {percentile(starts, 50):.1f} s, max {max(starts):.1f} s"
    )
    print(f"kill loop: {kill_loop:.0f} s; last start to convergence: {converge:.0f} s")
    print(f"rules {outcome.rules} (expected {args.resources})")
    print(f"duplicates {len(outcome.duplicates)}, unowned {len(outcome.unowned)}, ", end="")
    print(f"missing {len(outcome.missing)}, unaudited {len(outcome.unaudited)}, ", end="")
    print(f"audit chain findings {outcome.findings}")
    print(f"rules taken back after a crash (adopt rows): {outcome.adopted}")
    good = (
        outcome.rules == args.resources
        and not (outcome.duplicates or outcome.unowned or outcome.missing or outcome.unaudited)
        and outcome.findings == 0
    )
    print(f"verdict: {'PASS' if good else 'FAIL'}")


def main() -> None:
    """Parse arguments; run in a fresh temporary directory (TMPDIR too)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--refresh-interval", type=float, default=10.0)
    parser.add_argument("--calls-per-second", type=float, default=1000.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline of convergence")
    parser.add_argument("--keep", action="store_true", help="keep the directory (logs)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-crashes-"))
    (base / "tmp").mkdir()
    os.environ["TMPDIR"] = str(base / "tmp")  # Rucio's client caches tokens there
    tempfile.tempdir = None
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    failed = True
    try:
        run(args, base)
        failed = False
    finally:
        print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        leftovers = wait_leftovers(str(base))
        print(f"leftover processes: {', '.join(leftovers) if leftovers else 'none'}")
        if failed or args.keep:
            print(f"logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
