"""The operator process runs campaigns end to end: real API server, controller manager,
scheduler, kwok nodes, real Rucio, real kopf; killed with SIGKILL and restarted.

Campaigns are created in the cluster as a user would (`kubectl apply` does the same call);
the tests read status, the cluster's pods and the operator's ledger.
"""

import json
import random
import signal
import subprocess
import threading
from collections import defaultdict

import kubernetes
import pytest

from steward.models.campaign import format_memory
from steward.storage.database import make_engine, make_sessionmaker
from steward.storage.ledger import LedgerStore
from support.campaigns import campaign_body, invocation_of
from support.operator import OPERATOR_SITE, STEWARD
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

GI = 2**30


def phase_of(custom_objects, name, namespace):
    return ((custom_objects.get("campaigns", name, namespace) or {}).get("status") or {}).get(
        "phase"
    )


def wait_phase(custom_objects, name, namespace, phase, timeout=240, between=None):
    return until(
        f"campaign {name} to be {phase}",
        lambda: phase_of(custom_objects, name, namespace) == phase,
        timeout=timeout,
        between=between,
    )


class Ledger:
    """The operator's ledger, read from the test."""

    def __init__(self, url):
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)

    def invocations(self, uid, step):
        with self.sessions() as session:
            return {row.index: row for row in LedgerStore(session).invocations(uid, step)}

    def attempts(self, uid):
        with self.sessions() as session:
            return LedgerStore(session).attempts(uid)


@pytest.fixture(autouse=True)
def operator_site(custom_objects, rucio_sites):
    """The operator's own Site in the cluster, as registered in Rucio for the session.

    A campaign's Site must exist: admission checks it, and the operator reads it to know
    whether the campaign's Jobs go through Kueue. Its RSEs are the session's, so the operator's
    reconcile of it changes nothing in Rucio; the janitor removes it after the test.
    """
    if custom_objects.get("sites", OPERATOR_SITE) is None:
        site = rucio_sites.ncsa.model_dump(mode="json", by_alias=True, exclude_none=True)
        custom_objects.create("sites", site)


@pytest.fixture
def ledger(operator_env):
    store = Ledger(operator_env["STEWARD_DATABASE_URL"])
    yield store
    store.engine.dispose()


def test_a_campaign_runs_to_success_and_is_reported(
    steward_operator,
    custom_objects,
    rucio_data,
    namespace,
    control_plane,
    kube_binaries,
    operator_env,
    kube_api,
):
    steps = [{"name": "one"}, {"name": "two", "dependsOn": ["one"]}]
    body = campaign_body("e2e", namespace, invocations=12, steps=steps, scope=rucio_data.scope)
    created = custom_objects.create("campaigns", body)
    wait_phase(custom_objects, "e2e", namespace, "Succeeded")
    status = custom_objects.get("campaigns", "e2e", namespace)["status"]
    assert status["progress"] == "24/24"
    assert status["outputs"] == 24
    kubectl = [
        str(kube_binaries.bin_dir / "kubectl"),
        "--kubeconfig",
        str(control_plane.kubeconfig),
    ]
    shown = subprocess.run(
        [*kubectl, "get", "camp", "-A"], check=True, capture_output=True, text=True
    ).stdout
    header, row = (
        shown.splitlines()[0].split(),
        next(line.split() for line in shown.splitlines() if "e2e" in line),
    )
    assert header[:6] == ["NAMESPACE", "NAME", "PHASE", "PRIORITY", "PROGRESS", "SITE"]
    assert row[2:6] == ["Succeeded", "normal", "24/24", "ncsa"]
    events = (
        kubernetes.client.CoreV1Api(kube_api)
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={created['metadata']['uid']}"
        )
        .items
    )
    reasons = [e.reason for e in events]
    assert reasons.count("StepStarted") == 2
    assert "StepSucceeded" in reasons
    env = {"STEWARD_DATABASE_URL": operator_env["STEWARD_DATABASE_URL"], "PATH": "/usr/bin:/bin"}
    report = subprocess.run(
        [str(STEWARD), "report", f"{namespace}/e2e", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    data = json.loads(report.stdout)
    assert [s["states"] for s in data["steps"]] == [{"succeeded": 12}, {"succeeded": 12}]
    text = subprocess.run(
        [str(STEWARD), "report", "e2e", "-n", namespace],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "FAILURES BY CLASS" in text
    outputs = json.loads(
        subprocess.run(
            [
                str(STEWARD),
                "provenance",
                "outputs",
                "e2e",
                "-n",
                namespace,
                "--step",
                "two",
                "--format",
                "json",
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )
    assert len(outputs) == 12
    made = outputs[0]["outputs"][0]
    inputs = subprocess.run(
        [str(STEWARD), "provenance", "inputs", made],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "made by:" in inputs
    assert outputs[0]["inputs"][0] in inputs
    missing = subprocess.run(
        [str(STEWARD), "report", "no-such-campaign"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 1
    assert "no campaign 'no-such-campaign'" in missing.stderr


def test_a_campaign_of_another_site_is_left_alone(
    steward_operator, custom_objects, rucio_data, namespace, kube_api
):
    body = campaign_body(
        "elsewhere",
        namespace,
        invocations=2,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        site="in2p3",
    )
    created = custom_objects.create("campaigns", body)
    mine = campaign_body(
        "here", namespace, invocations=1, steps=[{"name": "one"}], scope=rucio_data.scope
    )
    custom_objects.create("campaigns", mine)
    wait_phase(custom_objects, "here", namespace, "Succeeded")
    assert custom_objects.get("campaigns", "elsewhere", namespace).get("status") is None
    jobs = (
        kubernetes.client.BatchV1Api(kube_api)
        .list_namespaced_job(
            namespace, label_selector=f"steward.lsst.io/campaign-uid={created['metadata']['uid']}"
        )
        .items
    )
    assert jobs == []
    # Deleting a campaign: the operator records what ran and lets it go.
    custom_objects.delete("campaigns", "here", namespace)
    until(
        "the campaign to be gone",
        lambda: custom_objects.get("campaigns", "here", namespace) is None,
    )


def test_raised_memory_survives_an_operator_kill(
    steward_operator, custom_objects, rucio_data, namespace, ledger
):
    oom = {"kwok.steward.lsst.io/oom": "2", "kwok.steward.lsst.io/oom-at": "1Gi,2Gi"}
    steps = [{"name": "one", "resources": {"memory": "1Gi"}, "podAnnotations": oom}]
    body = campaign_body("oom", namespace, invocations=4, steps=steps, scope=rucio_data.scope)
    uid = custom_objects.create("campaigns", body)["metadata"]["uid"]
    until(
        "the memory of invocation 2 to be raised in the ledger",
        lambda: (
            ledger.invocations(uid, "one").get(2) is not None
            and ledger.invocations(uid, "one")[2].memory == 2 * GI
        ),
    )
    steward_operator.kill(signal.SIGKILL)
    steward_operator.start()
    wait_phase(custom_objects, "oom", namespace, "Succeeded")
    row = ledger.invocations(uid, "one")[2]
    assert (row.memory, row.state) == (4 * GI, "succeeded")
    memories = [(a.klass, format_memory(a.memory)) for a in ledger.attempts(uid) if a.index == 2]
    assert memories == [("OOMKilled", "1Gi"), ("OOMKilled", "2Gi"), ("Succeeded", "4Gi")]


class PodWatch:
    """Every pod of a namespace as it changes; notes when an invocation has two live pods."""

    def __init__(self, api, namespace):
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.live = defaultdict(set)
        self.seen = {}
        self.violations = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        watch = kubernetes.watch.Watch()
        while not self.stop.is_set():
            for event in watch.stream(
                self.core.list_namespaced_pod, self.namespace, timeout_seconds=2
            ):
                pod = event["object"].to_dict()
                uid = pod["metadata"]["uid"]
                key = (pod["metadata"]["labels"]["steward.lsst.io/step"], invocation_of(pod))
                self.seen[uid] = key
                active = event["type"] != "DELETED" and pod["status"]["phase"] in {
                    "Pending",
                    "Running",
                }
                (self.live[key].add if active else self.live[key].discard)(uid)
                if len(self.live[key]) > 1:
                    self.violations.append((key, sorted(self.live[key])))
                if self.stop.is_set():
                    break

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join(10)


def test_sigkill_at_random_points_never_runs_an_invocation_twice_and_the_ledger_converges(
    steward_operator, custom_objects, rucio_data, namespace, ledger, kube_api
):
    randomness = random.Random(20261124)
    steps = [
        {
            "name": "one",
            "parallelism": 6,
            "retries": 3,
            "podAnnotations": {
                "kwok.steward.lsst.io/exit": "4=1,9=1",
                "kwok.steward.lsst.io/exit-times": "1",
                "kwok.steward.lsst.io/oom": "7",
                "kwok.steward.lsst.io/oom-at": "4Gi",
            },
        },
        {"name": "two", "dependsOn": ["one"], "parallelism": 6},
    ]
    body = campaign_body(
        "chaos", namespace, invocations=24, steps=steps, scope=rucio_data.scope, shardSize=10
    )
    with PodWatch(kube_api, namespace) as watch:
        uid = custom_objects.create("campaigns", body)["metadata"]["uid"]
        for _ in range(6):
            threading.Event().wait(randomness.uniform(0.5, 4.0))
            steward_operator.kill(signal.SIGKILL)
            steward_operator.start()
        wait_phase(custom_objects, "chaos", namespace, "Succeeded", timeout=300)
    assert watch.violations == []
    attempts = ledger.attempts(uid)
    # Every pod that ever ran is recorded exactly once, and nothing else is.
    assert sorted(a.pod_uid for a in attempts) == sorted(watch.seen)
    for step in ("one", "two"):
        rows = ledger.invocations(uid, step)
        assert sorted(rows) == list(range(24))
        assert all(row.state == "succeeded" for row in rows.values())
        succeeded = [a.index for a in attempts if a.step == step and a.klass == "Succeeded"]
        assert sorted(succeeded) == list(range(24))
    retried = {a.index: a.klass for a in attempts if a.step == "one" and a.klass != "Succeeded"}
    assert retried.get(4) == retried.get(9) == "ExitCode"
    assert retried.get(7) == "OOMKilled"
    status = custom_objects.get("campaigns", "chaos", namespace)["status"]
    assert status["progress"] == "48/48"
    assert status["failures"]["ExitCode 1"] == 2
