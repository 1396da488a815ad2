"""The campaign service against the real API server, controller manager, scheduler, kwok and
Rucio, one reconcile pass at a time. kwok Stages (steward/testing/campaign-stages.yaml) make
each invocation succeed, exit with a code or be OOM-killed, as the step's pod annotations say.
"""

import copy
import functools
import json
import secrets
from datetime import UTC, datetime, timedelta

import kubernetes
import pytest

from steward.exceptions import TransientError
from steward.models.campaign import Campaign, format_memory, parse_indexes
from steward.services.plan import CampaignPreview, site_disk_rse
from steward.storage.audit import AuditFilter
from steward.storage.kubernetes import KubeResources
from steward.storage.ledger import LedgerStore
from support.campaigns import active_per_invocation, campaign_body
from support.samples import SITE
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

GI = 2**30

DAG = [
    {"name": "one"},
    {"name": "two", "dependsOn": ["one"]},
    {"name": "three", "dependsOn": ["two"]},
]


def ledger_of(harness, uid):
    with harness.service.sessions() as session:
        store = LedgerStore(session)
        return (
            store.jobs(uid),
            store.attempts(uid),
            {
                (row.step, row.index): row
                for step in {j.step for j in store.jobs(uid)}
                for row in store.invocations(uid, step)
            },
        )


def test_three_step_dag_runs_in_order(campaign_harness, rucio_data, namespace):
    body = campaign_body(
        "dag", namespace, invocations=50, steps=DAG, scope=rucio_data.scope, shardSize=20
    )
    driven = campaign_harness.start(body)
    status = driven.until(
        "the campaign to succeed", lambda s: s["phase"] == "Succeeded", timeout=300
    )
    assert status["progress"] == "150/150"
    assert [s["succeeded"] for s in status["steps"]] == [50, 50, 50]
    assert [s["jobs"] for s in status["steps"]] == [3, 3, 3]
    assert status["outputs"] == 150
    jobs, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    ended = {}
    for attempt in attempts:
        ended[attempt.step] = max(ended.get(attempt.step, attempt.ended_at), attempt.ended_at)
    started = {}
    for job in jobs:
        started[job.step] = min(started.get(job.step, job.planned_at), job.planned_at)
    # A step's Jobs exist only after every invocation of the step it depends on ended.
    assert started["two"] >= ended["one"]
    assert started["three"] >= ended["two"]
    assert len(attempts) == 150
    assert all(row.state == "succeeded" and row.attempts == 1 for row in invocations.values())
    # Jobs and pods carry the campaign, step and shard; the Jobs are owned by the Campaign.
    live = campaign_harness.jobs(driven.uid)
    assert {j.metadata.labels["steward.lsst.io/step"] for j in live} == {"one", "two", "three"}
    assert {j.metadata.labels["steward.lsst.io/shard"] for j in live} == {"0", "1", "2"}
    assert all(j.metadata.owner_references[0].uid == driven.uid for j in live)
    assert {j.spec.completions for j in live} == {20, 10}
    assert {j.spec.template.spec.priority_class_name for j in live} == {"steward-campaign-normal"}
    transitions = [reason for _, reason, _ in driven.events if reason.startswith("Step")]
    assert transitions.count("StepStarted") == 3
    assert transitions.count("StepSucceeded") == 3


def test_failures_are_counted_up_to_the_limit_and_never_retry_codes_stop_at_once(
    campaign_harness, rucio_data, namespace
):
    steps = [
        {
            "name": "one",
            "retries": 2,
            "neverRetryExitCodes": [42],
            "podAnnotations": {"kwok.steward.lsst.io/exit": "2=1,5=42"},
        }
    ]
    body = campaign_body("fails", namespace, invocations=8, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    status = driven.until("the campaign to fail", lambda s: s["phase"] == "Failed", timeout=180)
    _, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    counted = invocations["one", 2]
    assert (counted.state, counted.attempts, counted.failures) == ("failed", 3, 3)
    never = invocations["one", 5]
    assert (never.state, never.attempts, never.failures, never.exit_code) == ("failed", 1, 1, 42)
    assert [a.klass for a in attempts if a.index == 2] == ["ExitCode"] * 3
    assert all(a.counted for a in attempts if a.index in {2, 5})
    assert sum(row.state == "succeeded" for row in invocations.values()) == 6
    assert status["failures"] == {"ExitCode 1": 3, "ExitCode 42": 1}
    assert status["steps"][0]["failed"] == 2
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvocationsFailed")
    # The Job turned Failed because indexes failed; the step's verdict is the ledger's.
    assert status["steps"][0]["phase"] == "Failed"


def test_out_of_memory_reruns_with_more_memory_up_to_the_limit(
    campaign_harness, rucio_data, namespace
):
    oom = {"kwok.steward.lsst.io/oom": "1,3", "kwok.steward.lsst.io/oom-at": "1Gi,2Gi"}
    steps = [
        {"name": "raised", "resources": {"memory": "1Gi"}, "podAnnotations": oom},
        {
            "name": "capped",
            "resources": {"memory": "1Gi"},
            "memoryLimit": "2Gi",
            "podAnnotations": oom,
        },
    ]
    body = campaign_body("oom", namespace, invocations=5, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    status = driven.until(
        "both steps to finish",
        lambda s: {x["phase"] for x in s["steps"]} == {"Succeeded", "Failed"},
        timeout=240,
    )
    jobs, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    for index in (1, 3):
        raised = invocations["raised", index]
        assert (raised.state, raised.memory, raised.failures) == ("succeeded", 4 * GI, 0)
        classes = [(a.klass, a.memory) for a in attempts if a.step == "raised" and a.index == index]
        assert classes == [("OOMKilled", GI), ("OOMKilled", 2 * GI), ("Succeeded", 4 * GI)]
        capped = invocations["capped", index]
        assert (capped.state, capped.memory, capped.last_class) == ("failed", 2 * GI, "OOMKilled")
    assert invocations["raised", 0].memory == GI
    rescues = [j for j in jobs if j.step == "raised" and j.kind == "rescue"]
    # Rescue Jobs run exactly the OOM-killed invocations (in one Job or several, as the kills
    # are noticed), first with 2Gi, then with 4Gi.
    by_memory = {}
    for job in rescues:
        by_memory.setdefault(format_memory(job.memory), []).extend(parse_indexes(job.invocations))
    assert {k: sorted(v) for k, v in by_memory.items()} == {"2Gi": [1, 3], "4Gi": [1, 3]}
    assert status["failures"] == {"OOMKilled": 8}
    assert {s["name"]: s["phase"] for s in status["steps"]} == {
        "raised": "Succeeded",
        "capped": "Failed",
    }
    assert any(reason == "RescueJob" for _, reason, _ in driven.events)


def test_pause_suspends_and_resume_does_not_redo_finished_invocations(
    campaign_harness, rucio_data, namespace
):
    steps = [
        {"name": "one", "parallelism": 4, "podAnnotations": {"kwok.steward.lsst.io/runtime": "3s"}}
    ]
    body = campaign_body("pause", namespace, invocations=16, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.until("some invocations to succeed", lambda s: s["steps"][0]["succeeded"] >= 4)
    driven.patch_spec({"desiredState": "Paused"})
    status = driven.until(
        "every pod to stop",
        lambda s: (
            s["phase"] == "Paused" and not active_per_invocation(campaign_harness.pods(driven.uid))
        ),
    )
    stopped = datetime.now(UTC)
    assert all(j.spec.suspend for j in campaign_harness.jobs(driven.uid))
    _, attempts, _ = ledger_of(campaign_harness, driven.uid)
    finished = {a.index for a in attempts if a.klass == "Succeeded"}
    before = {a.id for a in attempts}
    for _ in range(3):
        status = driven.step()
    assert status["phase"] == "Paused"
    assert status["steps"][0]["running"] == 0
    # Nothing started while paused: what the ledger gained since are the attempts running when
    # the pause came (recorded once their pods are seen gone, possibly a pass later), at most
    # one per running slot.
    since = [a for a in ledger_of(campaign_harness, driven.uid)[1] if a.id not in before]
    started = [a.started_at for a in since if a.started_at is not None]
    started = [at if at.tzinfo else at.replace(tzinfo=UTC) for at in started]  # SQLite: naive UTC
    assert all(at <= stopped for at in started), (started, stopped)
    assert len(since) <= 4  # the step's parallelism
    driven.patch_spec({"desiredState": "Running"})
    status = driven.until(
        "the campaign to succeed", lambda s: s["phase"] == "Succeeded", timeout=180
    )
    _, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    for index in finished:
        assert [a.klass for a in attempts if a.index == index] == ["Succeeded"]
    assert sum(a.klass == "Succeeded" for a in attempts) == 16
    # Pods stopped by the pause ended on SIGTERM: Evicted, never charged to the retries.
    stopped = [a for a in attempts if a.klass == "Evicted"]
    assert all(not a.counted and "SIGTERM" in a.reason for a in stopped)
    assert all(row.failures == 0 for row in invocations.values())


def test_an_eviction_is_retried_without_counting(campaign_harness, rucio_data, namespace, kube_api):
    steps = [
        {
            "name": "one",
            "retries": 0,
            "parallelism": 3,
            "podAnnotations": {"kwok.steward.lsst.io/runtime": "6s"},
        }
    ]
    body = campaign_body("evict", namespace, invocations=3, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.step()

    def running_pod():
        for pod in campaign_harness.pods(driven.uid):
            if (
                pod["status"]["phase"] == "Running"
                and pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                == "1"
            ):
                return pod
        return None

    pod = until("invocation 1 to run", running_pod)
    core = kubernetes.client.CoreV1Api(kube_api)
    core.create_namespaced_pod_eviction(
        pod["metadata"]["name"],
        namespace,
        {"metadata": {"name": pod["metadata"]["name"], "namespace": namespace}},
    )
    status = driven.until(
        "the campaign to succeed", lambda s: s["phase"] == "Succeeded", timeout=120
    )
    _, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    evicted = [a for a in attempts if a.index == 1]
    assert [(a.klass, a.reason, a.counted) for a in evicted] == [
        ("Evicted", "EvictionByEvictionAPI", False),
        ("Succeeded", "Completed", False),
    ]
    assert invocations["one", 1].failures == 0
    # With retries 0, a counted failure would have failed the invocation: it was not counted.
    assert status["steps"][0]["evicted"] == 1
    assert status["failures"] == {"Evicted": 1}


def test_the_plan_shows_the_staging_a_campaign_then_does(
    campaign_harness, rucio_data, rucio_storage, kube_api, namespace
):
    # A Site of the test's own, in the cluster, whose disk is where inputs are staged.
    site = copy.deepcopy(SITE)
    site["metadata"]["name"] = f"stage{secrets.token_hex(4)}"
    site["spec"]["rses"][0].update(name="NCSA_DISK", type="DISK", attributes={"tier": 1})
    kubernetes.client.CustomObjectsApi(kube_api).create_cluster_custom_object(
        "steward.lsst.io", "v1alpha1", "sites", site
    )
    datasets = [rucio_data.dataset(rse="NCSA_TAPE") for _ in range(2)]
    body = campaign_body(
        "planned",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        site=site["metadata"]["name"],
        coverage={"query": {"dids": datasets}},
        inputs={"prestage": True},
    )
    preview = CampaignPreview(
        rucio_storage, functools.partial(site_disk_rse, KubeResources(kube_api))
    )
    (planned,) = preview.consequences(None, body, None)
    assert (planned.action, planned.rules, planned.destination) == ("create", 2, "NCSA_DISK x1")

    driven = campaign_harness.start(body)
    for _ in range(2):
        driven.step()
    tag = campaign_harness.service_tag(driven.uid)
    rules = rucio_storage.list_rules(comment=tag)
    assert len(rules) == planned.rules
    assert {(r.rse_expression, r.activity) for r in rules} == {("NCSA_DISK", "Staging")}
    locked = sum(len(rucio_storage.list_rule_locks(r.id)) for r in rules)
    assert planned.place["NCSA_DISK"].files == locked

    live = driven.body()
    terminated = {**live, "spec": {**live["spec"], "desiredState": "Terminated"}}
    (release,) = preview.consequences(tag, terminated, live)
    assert (release.action, release.rules) == ("expire", 2)
    assert release.release == {"NCSA_DISK": planned.place["NCSA_DISK"]}
    driven.patch_spec({"desiredState": "Terminated"})
    driven.until("the campaign to end", lambda s: s["phase"] == "Terminated")
    assert all(r.expires_at is not None for r in rucio_storage.list_rules(comment=tag))
    # What the plan said would expire has: nothing is left to release.
    assert preview.consequences(tag, None, driven.body()) == []


def test_inputs_only_on_tape_are_staged_before_the_step_starts(
    campaign_harness, rucio_data, rucio_server, rucio_storage, namespace
):
    datasets = [rucio_data.dataset(rse="NCSA_TAPE") for _ in range(3)]
    body = campaign_body(
        "staged",
        namespace,
        invocations=0,
        steps=[{"name": "one"}],
        scope=rucio_data.scope,
        coverage={"query": {"dids": datasets}},
        inputs={"prestage": True, "destination": "NCSA_DISK", "lifetime": "10d"},
    )
    driven = campaign_harness.start(body)
    for _ in range(2):
        status = driven.step()
    assert status["phase"] == "Staging"
    assert status["steps"][0]["phase"] == "Staging"
    assert status["staging"] == {
        "rules": 3,
        "ok": 0,
        "replicating": 3,
        "stuck": 0,
        "released": False,
    }
    assert campaign_harness.jobs(driven.uid) == []
    rules = [r for d in datasets for r in rucio_storage.list_did_rules(d)]
    assert {r.rse_expression for r in rules} == {"NCSA_DISK"}
    tag = campaign_harness.service_tag(driven.uid)
    assert {r.comment for r in rules} == {tag}
    # The Rucio daemons recall the files from tape (the mock transfertool copies nothing).
    status = until(
        "the inputs to be staged",
        lambda: (s := driven.step())["staging"]["ok"] == 3 and s,
        between=rucio_server.daemons.converge,
        timeout=120,
    )
    status = driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    replicas = rucio_storage.list_replicas(datasets)
    assert all(states.get("NCSA_DISK") == "AVAILABLE" for states in replicas.values())
    jobs, _, _ = ledger_of(campaign_harness, driven.uid)
    assert len(jobs) == 1
    # Each pod reads its data id and inputs from the shard's ConfigMap, by completion index.
    [job] = campaign_harness.jobs(driven.uid)
    volume = job.spec.template.spec.volumes[0].config_map.name
    data = (
        kubernetes.client.CoreV1Api(campaign_harness.kube)
        .read_namespaced_config_map(volume, namespace)
        .data
    )
    entries = [json.loads(data[str(i)]) for i in range(3)]
    assert [e["dataId"]["did"] for e in entries] == sorted(datasets)
    assert [e["inputs"] for e in entries] == [[d] for d in sorted(datasets)]
    container = job.spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert env["STEWARD_INVOCATIONS"] == container.volume_mounts[0].mount_path
    assert env["STEWARD_STEP"] == "one"
    inputs = campaign_harness.ledger.outputs(campaign_harness.ledger.find("staged", namespace))
    assert sorted(i for record in inputs for i in record.inputs) == sorted(datasets)
    # The deletion gate's question: these inputs are in use until the campaign closes.
    ledger = campaign_harness.ledger
    in_use = ledger.inputs_in_use([*datasets, rucio_data.did("unrelated")])
    assert sorted(in_use) == sorted(datasets)
    assert {ref.name for refs in in_use.values() for ref in refs} == {"staged"}
    # Closing the campaign releases the staging rules (they expire within a day).
    driven.patch_spec({"desiredState": "ClosedOut"})
    status = driven.until("closeout", lambda s: s["phase"] == "ClosedOut")
    assert ledger.inputs_in_use(datasets) == {}
    assert status["staging"]["released"] is True
    for rule in [r for d in datasets for r in rucio_storage.list_did_rules(d)]:
        remaining = rule.expires_at - datetime.now(UTC)
        assert timedelta(0) < remaining <= timedelta(days=1, minutes=1)


def test_breakpoint_force_accept_and_retry(campaign_harness, rucio_data, namespace):
    steps = [
        {
            "name": "one",
            "retries": 0,
            "podAnnotations": {"kwok.steward.lsst.io/exit": "3=7"},
        },
        {"name": "two", "dependsOn": ["one"], "breakpoint": True},
        {"name": "three", "dependsOn": ["one"]},
    ]
    body = campaign_body("controls", namespace, invocations=5, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    status = driven.until("step one to fail", lambda s: s["phase"] == "Failed")
    assert [s["phase"] for s in status["steps"]] == ["Failed", "Waiting", "Waiting"]
    # Accepting more failures than allowed is refused and says why.
    driven.patch_spec({"controls": {"accept": [{"step": "one", "maxFailures": 0, "reason": "x"}]}})
    status = driven.step()
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "AcceptRefused"
    assert "1 invocations failed" in degraded["message"]
    # A retry with the failure fixed reruns only the failed invocation.
    fixed = [dict(s) for s in body["spec"]["steps"]]
    fixed[0]["podAnnotations"] = {}
    driven.patch_spec(
        {
            "steps": fixed,
            "controls": {"retry": [{"step": "one", "id": "fix-1", "reason": "bad node drained"}]},
        }
    )
    status = driven.until(
        "step one to succeed and the breakpoint to hold",
        lambda s: s["steps"][0]["phase"] == "Succeeded" and s["steps"][2]["phase"] == "Succeeded",
    )
    assert status["steps"][1]["phase"] == "AwaitingApproval"
    assert status["steps"][1]["jobs"] == 0
    _, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    assert [a.index for a in attempts if a.step == "one" and a.job.endswith("-r1")] == [3]
    assert invocations["one", 3].attempts == 2
    driven.patch_spec({"controls": {"approve": ["two"], "retry": [{"step": "one", "id": "fix-1"}]}})
    status = driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    assert [(c["type"], c["step"], c["id"], c["invocations"]) for c in status["controls"]] == [
        ("retry", "one", "fix-1", 1),
        ("approve", "two", "", 0),
    ]
    actions = [e.action for e in campaign_harness.service.audit.query(AuditFilter(name="controls"))]
    assert "campaign-retry" in actions
    assert "campaign-approve" in actions


def test_force_accept_lets_the_next_step_start(campaign_harness, rucio_data, namespace):
    steps = [
        {
            "name": "one",
            "neverRetryExitCodes": [9],
            "podAnnotations": {"kwok.steward.lsst.io/exit": "0=9"},
        },
        {"name": "two", "dependsOn": ["one"]},
    ]
    body = campaign_body("accept", namespace, invocations=4, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.until("step one to fail", lambda s: s["phase"] == "Failed")
    driven.patch_spec(
        {
            "controls": {
                "accept": [{"step": "one", "maxFailures": 1, "reason": "detector 0 is dead"}]
            }
        }
    )
    status = driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    assert status["steps"][0]["accepted"] == 1
    assert status["steps"][0]["phase"] == "Succeeded"
    assert status["progress"] == "8/8"
    entry = next(
        e
        for e in campaign_harness.service.audit.query(AuditFilter(name="accept"))
        if e.action == "campaign-accept"
    )
    assert json.loads(entry.after)["invocations"] == "0"
    assert entry.message == "detector 0 is dead"


def test_terminate_keeps_the_ledger_and_holds_outputs_for_review(
    campaign_harness, rucio_data, rucio_storage, namespace
):
    steps = [
        {"name": "one", "parallelism": 2, "podAnnotations": {"kwok.steward.lsst.io/runtime": "2s"}}
    ]
    body = campaign_body("term", namespace, invocations=12, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.until("some outputs", lambda s: s["outputs"] >= 2)
    driven.patch_spec({"desiredState": "Terminated"})
    status = driven.until(
        "termination",
        lambda s: s["phase"] == "Terminated" and s["conditions"][0]["status"] == "True",
    )
    assert campaign_harness.jobs(driven.uid) == []
    assert status["review"] == "Pending"
    assert status["steps"][0]["phase"] == "Cancelled"
    held = campaign_harness.ledger.campaign_outputs(namespace, "term")
    assert held.failed
    assert held.review_pending
    assert held.outcome == "Terminated"
    assert len(held.outputs) == status["outputs"] >= 2
    # Nothing was deleted: the outputs are still in Rucio.
    replicas = rucio_storage.list_replicas(held.outputs)
    assert all(states.get("NCSA_DISK") == "AVAILABLE" for states in replicas.values())
    _, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    assert {row.state for row in invocations.values()} <= {"succeeded", "cancelled"}
    assert all(a.klass in {"Succeeded", "Evicted"} for a in attempts)
    # Terminated is final: asking for Running again changes nothing.
    driven.patch_spec({"desiredState": "Running"})
    assert driven.step()["phase"] == "Terminated"


def test_closeout_verifies_outputs_and_closes_datasets(
    campaign_harness, rucio_data, rucio_storage, namespace
):
    body = campaign_body(
        "close",
        namespace,
        invocations=4,
        steps=DAG[:2],
        scope=rucio_data.scope,
        outputs={"scope": rucio_data.scope, "rse": "NCSA_DISK", "archive": "NCSA_TAPE"},
    )
    driven = campaign_harness.start(body)
    driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    records = campaign_harness.ledger.outputs(campaign_harness.ledger.find("close", namespace))
    lost = records[0].outputs[0]
    rucio_storage.set_replicas_available("NCSA_DISK", [lost], available=False)
    driven.patch_spec({"desiredState": "ClosedOut"})
    status = driven.step()
    assert status["phase"] == "Succeeded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "OutputsMissing"
    assert lost in degraded["message"]
    rucio_storage.set_replicas_available("NCSA_DISK", [lost], available=True)
    status = driven.until("closeout", lambda s: s["phase"] == "ClosedOut")
    uid = driven.uid
    for step in ("one", "two"):
        dataset = f"{rucio_data.scope}:close.{step}.{uid[:8]}"
        assert not rucio_storage.is_open(dataset)
        assert len(rucio_storage.list_content(dataset)) == 4
        [rule] = rucio_storage.list_did_rules(dataset)
        assert (rule.rse_expression, rule.comment) == (
            "NCSA_TAPE",
            campaign_harness.service_tag(uid),
        )
    assert campaign_harness.jobs(uid) == []
    assert campaign_harness.ledger.campaign_outputs(namespace, "close").review_pending is False


def test_provenance_matches_what_ran(campaign_harness, rucio_data, namespace):
    body = campaign_body("prov", namespace, invocations=6, steps=DAG[:2], scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    ledger = campaign_harness.ledger
    ref = ledger.find(f"{namespace}/prov")
    _, attempts, _ = ledger_of(campaign_harness, driven.uid)
    pods = {(a.step, a.index): a.pod for a in attempts if a.klass == "Succeeded"}
    one = {r.index: r for r in ledger.outputs(ref, step="one")}
    two = {r.index: r for r in ledger.outputs(ref, step="two")}
    assert sorted(one) == sorted(two) == list(range(6))
    for index in range(6):
        # The kwok stage names each output after the pod that wrote it.
        assert one[index].outputs == [f"{rucio_data.scope}:{pods['one', index]}.0.fits"]
        assert two[index].inputs == one[index].outputs
        assert two[index].data_id == {"visit": 1000 + index, "detector": index % 9}
        made = ledger.provenance(two[index].outputs[0])
        assert [(m.step, m.index) for m in made.made_by] == [("two", index)]
        assert made.made_by[0].inputs == one[index].outputs
        read = ledger.provenance(one[index].outputs[0])
        assert [(r.step, r.index) for r in read.read_by] == [("two", index)]
        assert [(m.step, m.index) for m in read.made_by] == [("one", index)]
    # Outputs of step one are inputs of step two: in use while the campaign is not closed.
    assert set(ledger.inputs_in_use(one[0].outputs)) == set(one[0].outputs)
    outputs = ledger.campaign_outputs(namespace, "prov")
    assert len(outputs.outputs) == 12
    assert not outputs.failed
    assert not outputs.review_pending
    report = ledger.report(ref)
    assert [s["states"] for s in report.steps] == [{"succeeded": 6}, {"succeeded": 6}]
    assert sum(n["attempts"] for n in report.nodes) == 12


@pytest.fixture
def small_node(control_plane, kube_api):
    """A kwok node with room for two one-CPU pods, tainted so only the test's pods land there."""
    name = f"small-{secrets.token_hex(3)}"
    core = kubernetes.client.CoreV1Api(kube_api)
    capacity = {"cpu": "2", "memory": "8Gi", "pods": "10"}
    core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": name, "steward-test/pool": name},
            },
            "spec": {
                "taints": [{"key": "steward-test/pool", "value": name, "effect": "NoSchedule"}]
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
    )

    def ready():
        node = core.read_node(name)
        conditions = {c.type: c.status for c in node.status.conditions or []}
        taints = {t.key for t in node.spec.taints or []}
        return conditions.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints

    until("the small node to be ready", ready)
    yield name
    core.delete_node(name)


def test_an_urgent_campaign_preempts_a_low_one_on_a_full_node(
    campaign_harness, rucio_data, namespace, small_node
):
    pool = {
        "nodeSelector": {"steward-test/pool": small_node},
        "tolerations": [{"key": "steward-test/pool", "value": small_node, "effect": "NoSchedule"}],
    }
    low_steps = [
        {
            "name": "one",
            "parallelism": 4,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "retries": 0,
            "podAnnotations": {"kwok.steward.lsst.io/runtime": "20s"},
        }
    ]
    low = campaign_harness.start(
        campaign_body(
            "low",
            namespace,
            invocations=4,
            steps=low_steps,
            scope=rucio_data.scope,
            priority="low",
            **pool,
        )
    )
    low.until("the node to be full", lambda s: s["steps"][0]["running"] == 4)
    pods = campaign_harness.pods(low.uid)
    assert sorted(p["status"]["phase"] for p in pods) == [
        "Pending",
        "Pending",
        "Running",
        "Running",
    ]
    urgent_steps = [
        {
            "name": "one",
            "parallelism": 2,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podAnnotations": {"kwok.steward.lsst.io/runtime": "1s"},
        }
    ]
    urgent = campaign_harness.start(
        campaign_body(
            "urgent",
            namespace,
            invocations=2,
            steps=urgent_steps,
            scope=rucio_data.scope,
            priority="urgent",
            **pool,
        )
    )

    def urgent_done():
        low.step()
        return urgent.step()["phase"] == "Succeeded"

    until("the urgent campaign to succeed", urgent_done, timeout=120)
    assert low.step()["phase"] == "Running"
    _, attempts, _ = ledger_of(campaign_harness, low.uid)
    preempted = [a for a in attempts if a.klass == "Evicted"]
    assert preempted
    assert all(a.reason == "PreemptionByScheduler" and not a.counted for a in preempted)
    status = low.until(
        "the low campaign to succeed", lambda s: s["phase"] == "Succeeded", timeout=180
    )
    assert status["failures"] == {"Evicted": len(preempted)}
    priorities = {p["spec"]["priority"] for p in campaign_harness.pods(urgent.uid)}
    assert priorities == {1000000}


def test_deleting_a_campaign_stops_its_jobs_and_keeps_the_ledger(
    campaign_harness, rucio_data, namespace
):
    steps = [{"name": "one", "podAnnotations": {"kwok.steward.lsst.io/runtime": "30s"}}]
    body = campaign_body("gone", namespace, invocations=3, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.until("pods to run", lambda s: s["steps"][0]["running"] == 3)
    live = driven.body()
    campaign = Campaign.model_validate({k: v for k, v in live.items() if k != "status"})

    def finalized():
        try:
            campaign_harness.service.finalize(campaign, driven.ref(live))
        except TransientError:
            return False
        return True

    until("the campaign's pods to be recorded", finalized, timeout=60)
    assert campaign_harness.jobs(live["metadata"]["uid"]) == []
    outputs = campaign_harness.ledger.campaign_outputs(namespace, "gone")
    assert (outputs.outcome, outputs.review_pending) == ("Deleted", True)
    _, attempts, _ = ledger_of(campaign_harness, live["metadata"]["uid"])
    assert sorted(a.klass for a in attempts) == ["Evicted"] * 3


def test_a_lost_job_and_a_rescue_request_run_only_what_is_missing(
    campaign_harness, rucio_data, namespace, kube_api
):
    steps = [
        {
            "name": "one",
            "parallelism": 2,
            "neverRetryExitCodes": [5],
            "podAnnotations": {
                "kwok.steward.lsst.io/runtime": "2s",
                "kwok.steward.lsst.io/exit": "7=5",
            },
        }
    ]
    body = campaign_body("lost", namespace, invocations=8, steps=steps, scope=rucio_data.scope)
    driven = campaign_harness.start(body)
    driven.until("some invocations to succeed", lambda s: s["steps"][0]["succeeded"] >= 2)
    # Someone deletes the step's Job: its unfinished invocations are rerun in a rescue Job
    # once every pod of the lost Job has ended; finished ones are not redone.
    [job] = campaign_harness.jobs(driven.uid)
    kubernetes.client.BatchV1Api(kube_api).delete_namespaced_job(
        job.metadata.name, namespace, propagation_policy="Background"
    )
    status = driven.until("the step to finish", lambda s: s["phase"] == "Failed", timeout=180)
    _, attempts, invocations = ledger_of(campaign_harness, driven.uid)
    succeeded = [a.index for a in attempts if a.klass == "Succeeded"]
    assert sorted(succeeded) == [0, 1, 2, 3, 4, 5, 6]
    lost = [a for a in attempts if a.job == job.metadata.name and a.klass == "Evicted"]
    assert all("pod deleted" in a.reason and not a.counted for a in lost)
    assert invocations["one", 7].state == "failed"
    assert any(j.kind == "rescue" for j in ledger_of(campaign_harness, driven.uid)[0])
    # A rescue request with the cause fixed runs what has not succeeded: invocation 7 only.
    fixed = [dict(s) for s in body["spec"]["steps"]]
    fixed[0]["podAnnotations"] = {}
    driven.patch_spec(
        {"steps": fixed, "controls": {"rescue": [{"step": "one", "id": "after-fix"}]}}
    )
    status = driven.until("the campaign to succeed", lambda s: s["phase"] == "Succeeded")
    _, attempts, _ = ledger_of(campaign_harness, driven.uid)
    assert sorted(a.index for a in attempts if a.klass == "Succeeded") == list(range(8))
    assert status["controls"] == [
        {
            "type": "rescue",
            "step": "one",
            "id": "after-fix",
            "invocations": 1,
            "time": status["controls"][0]["time"],
        }
    ]
