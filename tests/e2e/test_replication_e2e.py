"""The operator process end to end: real API server, real Rucio, real kopf.

Sites and ReplicationRules are created in the cluster; the operator registers RSEs and creates
rules in Rucio; the tests check Rucio directly and wait (with deadlines) for status.
"""

import json
import random
import secrets
import signal
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import kubernetes
import pytest

from steward.services.audit import AuditService
from steward.storage.database import make_engine, make_sessionmaker
from steward.storage.files import write_private
from steward.storage.rucio import RucioStorage
from steward.testing.crashes import crash_outcome, crash_repeatedly, kill_plan
from steward.testing.operatorprocess import OperatorProcess
from support.operator import STEWARD, condition_of, owner_tag_of
from support.rucio import RucioData
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]


def _site_body(suffix):
    facility = f"E{suffix}".upper()
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": f"e2e-{suffix}"},
        "spec": {
            "facility": facility,
            "rses": [
                {
                    "name": f"{facility}_{kind}",
                    "type": kind,
                    "attributes": {"custodial": True} if kind == "TAPE" else {},
                    "protocols": [
                        {
                            "scheme": "mock",
                            "hostname": "localhost",
                            "port": 0,
                            "prefix": f"/tmp/steward-mock/{facility.lower()}-{kind.lower()}",
                            "impl": "rucio.rse.protocols.mock.Default",
                        }
                    ],
                }
                for kind in ("DISK", "TAPE")
            ],
        },
    }


def _rule_body(name, namespace, dids, destination, **spec):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"dids": dids}, "destination": destination, **spec},
    }


@pytest.fixture
def e2e_site(custom_objects, rucio_storage, steward_operator):
    """A Site created in the cluster and registered in Rucio by the operator."""
    suffix = secrets.token_hex(3)
    body = _site_body(suffix)
    custom_objects.create("sites", body)
    name = body["metadata"]["name"]
    until(
        "the Site to be Ready",
        lambda: (
            (condition_of(custom_objects.get("sites", name), "Ready") or {}).get("status") == "True"
        ),
        timeout=60,
    )
    return body


def test_site_is_registered_and_reported(e2e_site, custom_objects, rucio_storage):
    facility = e2e_site["spec"]["facility"]
    site = custom_objects.get("sites", e2e_site["metadata"]["name"])
    assert site["status"]["registered"] == 2
    assert site["status"]["available"] == 2
    assert sorted(rucio_storage.list_rses(f"site={facility}")) == [
        f"{facility}_DISK",
        f"{facility}_TAPE",
    ]


def test_rules_are_created_and_ready(
    e2e_site,
    custom_objects,
    rucio_storage,
    rucio_data,
    rucio_server,
    namespace,
    control_plane,
    kube_binaries,
    cluster_id,
):
    facility = e2e_site["spec"]["facility"]
    datasets = [rucio_data.dataset(rse=f"{facility}_DISK") for _ in range(3)]
    created = custom_objects.create(
        "replicationrules", _rule_body("to-tape", namespace, datasets, f"site={facility}&type=TAPE")
    )

    def ready():
        body = custom_objects.get("replicationrules", "to-tape", namespace)
        return (condition_of(body, "Ready") or {}).get("status") == "True" and body

    body = until("Ready", ready, timeout=90, between=rucio_server.daemons.converge)
    assert body["status"]["counts"]["OK"] == 3
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    rules = rucio_storage.list_rules(comment=owner_tag_of(created, cluster_id))
    assert sorted(r.did for r in rules) == sorted(datasets)
    assert {r.account for r in rules} == {rucio_server.account}  # steward, not root
    assert body["status"]["ownerTag"] == owner_tag_of(created, cluster_id)
    assert sorted(body["status"]["ruleIds"]) == sorted(r.id for r in rules)

    kubectl = kube_binaries.bin_dir / "kubectl"
    shown = subprocess.run(
        [str(kubectl), "--kubeconfig", str(control_plane.kubeconfig), "get", "rr", "-n", namespace],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    header, row = shown.splitlines()[:2]
    assert header.split()[:7] == [
        "NAME",
        "DESTINATION",
        "COPIES",
        "OK",
        "REPLICATING",
        "STUCK",
        "READY",
    ]
    assert row.split()[:7] == ["to-tape", f"site={facility}&type=TAPE", "1", "3", "0", "0", "True"]


def test_kopf_keeps_its_state_in_the_status_and_sees_spec_changes_only(
    e2e_site, custom_objects, rucio_data, rucio_server, namespace
):
    """kopf's last handled spec rides in the status patch; metadata edits give it no diff."""
    facility = e2e_site["spec"]["facility"]
    first, second = (rucio_data.dataset(rse=f"{facility}_DISK") for _ in range(2))
    custom_objects.create(
        "replicationrules", _rule_body("kopf-state", namespace, [first], f"{facility}_TAPE")
    )

    def ready(generation):
        body = custom_objects.get("replicationrules", "kopf-state", namespace)
        done = (condition_of(body, "Ready") or {}).get("status") == "True"
        return done and body["status"]["observedGeneration"] == generation and body

    body = until("Ready", lambda: ready(1), timeout=90, between=rucio_server.daemons.converge)
    kopf_state = body["status"]["kopf"]
    assert json.loads(kopf_state["lastHandledConfiguration"]) == {"spec": body["spec"]}
    assert "progress" not in kopf_state  # a handler that succeeded at once leaves none
    assert not any(
        key.startswith("steward.lsst.io/") for key in body["metadata"].get("annotations") or {}
    )
    assert body["metadata"]["finalizers"] == ["steward.lsst.io/finalizer"]

    custom_objects.patch(
        "replicationrules",
        "kopf-state",
        namespace,
        {"metadata": {"annotations": {"example.org/note": "edited"}}},
    )
    custom_objects.patch(
        "replicationrules", "kopf-state", namespace, {"spec": {"selector": {"dids": [second]}}}
    )
    body = until(
        "the new spec Ready", lambda: ready(2), timeout=90, between=rucio_server.daemons.converge
    )
    assert json.loads(body["status"]["kopf"]["lastHandledConfiguration"]) == {"spec": body["spec"]}
    assert body["status"]["selected"] == 1


def test_deleted_rule_in_rucio_is_restored_with_an_event(
    e2e_site, custom_objects, rucio_storage, rucio_data, namespace, kube_api, cluster_id
):
    facility = e2e_site["spec"]["facility"]
    dataset = rucio_data.dataset()
    created = custom_objects.create(
        "replicationrules", _rule_body("drift", namespace, [dataset], f"{facility}_DISK")
    )
    tag = owner_tag_of(created, cluster_id)
    (rule,) = until("the rule", lambda: rucio_storage.list_rules(comment=tag))
    rucio_storage.delete_rule(rule.id)
    until(
        "the rule to be restored",
        lambda: rucio_storage.get_rule(rule.id).expires_at is None,
        timeout=60,
    )
    import kubernetes  # noqa: PLC0415

    core = kubernetes.client.CoreV1Api(kube_api)
    # The Event is posted after the restore, in the same reconcile: wait for it, do not race.
    until(
        "a DriftRestored Event",
        lambda: any(
            e.reason == "DriftRestored" for e in core.list_namespaced_event(namespace).items
        ),
        timeout=30,
    )


def test_deletion_with_delete_policy_removes_rules(
    e2e_site, custom_objects, rucio_storage, rucio_data, namespace, cluster_id
):
    facility = e2e_site["spec"]["facility"]
    dataset = rucio_data.dataset()
    created = custom_objects.create(
        "replicationrules",
        _rule_body("gone", namespace, [dataset], f"{facility}_DISK", deletionPolicy="Delete"),
    )
    tag = owner_tag_of(created, cluster_id)
    (rule,) = until("the rule", lambda: rucio_storage.list_rules(comment=tag))
    custom_objects.delete("replicationrules", "gone", namespace)
    until(
        "the resource to go",
        lambda: custom_objects.get("replicationrules", "gone", namespace) is None,
    )
    assert rucio_storage.get_rule(rule.id).expires_at is not None


def test_with_managed_fields_stripped_from_kopfs_bodies_a_resource_lives_and_goes(
    e2e_site, custom_objects, rucio_storage, rucio_data, rucio_server, namespace, steward_operator
):
    """The operator drops managedFields from what kopf keeps (its default): kopf still adds
    its finalizer, sees a spec change, runs the timer and removes the finalizer on delete."""
    assert "no metadata.managedFields, strings interned" in steward_operator.log.read_text()
    facility = e2e_site["spec"]["facility"]
    first, second = (rucio_data.dataset(rse=f"{facility}_DISK") for _ in range(2))
    custom_objects.create(
        "replicationrules",
        _rule_body("lean", namespace, [first], f"{facility}_DISK", deletionPolicy="Delete"),
    )

    def ready(generation):
        body = custom_objects.get("replicationrules", "lean", namespace)
        done = (condition_of(body, "Ready") or {}).get("status") == "True"
        return done and body["status"]["observedGeneration"] == generation and body

    body = until("Ready", lambda: ready(1), timeout=90, between=rucio_server.daemons.converge)
    assert body["metadata"]["managedFields"]  # the API server keeps them; kopf does not
    assert body["metadata"]["finalizers"] == ["steward.lsst.io/finalizer"]
    custom_objects.patch(
        "replicationrules", "lean", namespace, {"spec": {"selector": {"dids": [first, second]}}}
    )
    body = until(
        "the new spec", lambda: ready(2), timeout=90, between=rucio_server.daemons.converge
    )
    tag = body["status"]["ownerTag"]
    rules = {r.did: r for r in rucio_storage.list_rules(comment=tag)}
    assert sorted(rules) == sorted([first, second])
    rucio_storage.delete_rule(rules[second].id)  # behind its back: the timer restores it
    until(
        "the timer to restore the rule",
        lambda: rucio_storage.get_rule(rules[second].id).expires_at is None,
        timeout=60,
    )
    custom_objects.delete("replicationrules", "lean", namespace)
    # kopf removes its finalizer with a JSON patch that tests the resourceVersion; one that
    # lost a race with a timer's status patch was seen to be retried a minute later.
    until(
        "the finalizer to be removed",
        lambda: custom_objects.get("replicationrules", "lean", namespace) is None,
        timeout=150,
    )
    assert all(rucio_storage.get_rule(r.id).expires_at is not None for r in rules.values())


CRASH_RESOURCES = 40
"""Resources of the crash test: a size that runs in CI on two cores (bench/crashes.py runs
the same with 1,000)."""
CRASH_KILLS = 20


@pytest.mark.long
@pytest.mark.timeout(900)  # 20 kills: 592 s with setup on 2 cores beside two other workers
def test_crash_safety_under_sigkill(
    e2e_site,
    custom_objects,
    rucio_storage,
    rucio_data,
    namespace,
    steward_operator,
    cluster_id,
    operator_env,
):
    """SIGKILL the operator 20 times at random points while resources arrive in waves.

    Kills come after a random delay, in a burst of Rucio calls, or in a burst of status
    writes (`steward.testing.crashes`). Afterwards: exactly one rule per (DID, resource),
    no rule without its owner, an audit row of success for every rule, an intact chain.
    """
    facility = e2e_site["spec"]["facility"]
    names = [f"crash-{i:03d}" for i in range(CRASH_RESOURCES)]
    datasets = {name: rucio_data.dataset(files=1) for name in names}
    waves = [names[i::CRASH_KILLS] for i in range(CRASH_KILLS)]
    created = {}

    def wave(index):
        for name in waves[index]:
            created[name] = custom_objects.create(
                "replicationrules",
                _rule_body(name, namespace, [datasets[name]], f"{facility}_DISK"),
            )

    def statuses():
        listed = custom_objects.api.list_namespaced_custom_object(
            "steward.lsst.io", "v1alpha1", namespace, "replicationrules"
        )
        return sum(1 for item in listed["items"] if (item.get("status") or {}).get("ruleIds"))

    plan = kill_plan(
        CRASH_KILLS, random.Random(20261201), max_statuses=CRASH_RESOURCES // CRASH_KILLS
    )
    steward_operator.kill(signal.SIGKILL)
    crashes = crash_repeatedly(
        steward_operator, plan, statuses=statuses, before_each=wave, deadline=10
    )
    assert len(crashes) == CRASH_KILLS
    for crash in crashes:  # shown with -s or on failure
        print(  # noqa: T201
            f"{crash.kill.moment.value} {crash.kill.amount:.1f} reached={crash.reached} "
            f"start={crash.start_seconds:.1f}s waited={crash.waited_seconds:.1f}s"
        )
    assert all(crash.reached for crash in crashes)  # no kill waited for its deadline

    def owns_its_rules(name):
        status = (custom_objects.get("replicationrules", name, namespace) or {}).get("status") or {}
        return bool(status.get("ruleIds")) and len(status["ruleIds"]) == status.get("selected")

    pending = list(names)

    def converged():
        pending[:] = [name for name in pending if not owns_its_rules(name)]
        return not pending

    try:
        until(f"all {len(names)} resources to own their rules", converged, timeout=240)
    except pytest.fail.Exception:
        sample = custom_objects.get("replicationrules", pending[0], namespace)
        pytest.fail(f"{len(pending)} resources not converged, e.g. {sample}")
    expected = {
        owner_tag_of(created[name], cluster_id): (created[name]["metadata"]["uid"], datasets[name])
        for name in names
    }
    engine = make_engine(operator_env["STEWARD_DATABASE_URL"])
    try:
        outcome = crash_outcome(
            rucio_storage.list_rules(scope=rucio_data.scope),
            expected,
            AuditService(make_sessionmaker(engine)),
            namespace,
        )
    finally:
        engine.dispose()
    assert outcome.duplicates == []
    assert outcome.unowned == []
    assert outcome.missing == []
    assert outcome.unaudited == []
    assert outcome.findings == 0
    assert outcome.rules == len(names)


def test_site_deletion_waits_while_rules_place_data_there(
    e2e_site, custom_objects, rucio_storage, rucio_data, rucio_server, namespace, cluster_id
):
    facility = e2e_site["spec"]["facility"]
    site_name = e2e_site["metadata"]["name"]
    dataset = rucio_data.dataset(rse=f"{facility}_DISK")
    created = custom_objects.create(
        "replicationrules",
        _rule_body("pin", namespace, [dataset], f"{facility}_TAPE", deletionPolicy="Delete"),
    )
    (pinned,) = until(
        "the rule", lambda: rucio_storage.list_rules(comment=owner_tag_of(created, cluster_id))
    )
    custom_objects.delete("sites", site_name)

    def waiting():
        body = custom_objects.get("sites", site_name)
        deletion = ((body or {}).get("status") or {}).get("deletion", "")
        return body if "may hold data" in deletion else None

    body = until("the Site's deletion to wait", waiting)
    assert f"{facility}_TAPE may hold data of 1 Rucio rules" in body["status"]["deletion"]

    # Delete goes through the deletion gate: the tape rule is the DID's last custodial copy,
    # so the resource keeps its finalizer (and the rule) until its policy says Orphan.
    custom_objects.delete("replicationrules", "pin", namespace)

    def refused():
        degraded = condition_of(
            custom_objects.get("replicationrules", "pin", namespace), "Degraded"
        )
        return degraded if "LastCustodialReplica" in (degraded or {}).get("message", "") else None

    until("the deletion gate to keep the custodial rule", refused)
    assert rucio_storage.get_rule(pinned.id).comment == owner_tag_of(created, cluster_id)
    custom_objects.patch(
        "replicationrules", "pin", namespace, {"spec": {"deletionPolicy": "Orphan"}}
    )
    until(
        "the rule's release",
        lambda: custom_objects.get("replicationrules", "pin", namespace) is None,
    )
    # Whoever takes the orphan over retires it (Rucio locks rules on tape: unlock it too).
    rucio_storage.update_rule(pinned.id, lifetime=timedelta(0), locked=False)
    until(
        "the Site to go",
        lambda: custom_objects.get("sites", site_name) is None,
        timeout=90,
        between=lambda: rucio_server.daemons.run("judge-cleaner"),
    )


def _health(process):
    """The operator's liveness answer (probe id -> result), or None if it did not answer."""
    try:
        with urllib.request.urlopen(process.liveness, timeout=5) as response:  # noqa: S310
            return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def _events(core, namespace, name, reason):
    """How many Events of ``reason`` the API server holds for the resource ``name``."""
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return sum(1 for event in found.items if event.reason == reason)


def _retries(body, handler):
    """kopf's retry count of ``handler`` on the resource (its progress, kept in status)."""
    progress = (((body or {}).get("status") or {}).get("kopf") or {}).get("progress") or {}
    return (progress.get(handler) or {}).get("retries", 0)


def _rucio_up(process):
    return (_health(process) or {}).get("rucio") == "up"


def _private_operator(server, operator_env, tmp_path):
    """An operator of the test's own, talking to ``server``, with short Rucio timeouts."""
    settings = server.settings()
    password = tmp_path / "private-rucio-password"
    write_private(password, settings.rucio_secret().get_secret_value())
    env = {
        **operator_env,
        "STEWARD_RUCIO_HOST": str(settings.rucio_host),
        "STEWARD_RUCIO_USERNAME": str(settings.rucio_username),
        "STEWARD_RUCIO_PASSWORD_FILE": str(password),
        # Seconds, as in production, only fewer: the test waits for the hang to be noticed.
        "STEWARD_RUCIO_CONNECT_TIMEOUT": "2",
        "STEWARD_RUCIO_READ_TIMEOUT": "2",
        "STEWARD_RUCIO_WRITE_TIMEOUT": "3",
        "STEWARD_RUCIO_LISTING_TIMEOUT": "3",
    }
    process = OperatorProcess(env, tmp_path / "private-operator.log")
    process.start(timeout=60)
    return process


@pytest.mark.parametrize("outage", ["hang", "refuse"])
def test_rucio_outage_degrades_then_converges(
    outage,
    private_rucio_server,
    operator_env,
    tmp_path,
    custom_objects,
    namespace,
    janitor,
    cluster_id,
    kube_api,
):
    """Rucio hangs (SIGSTOP: connections accepted, nothing answered) or refuses connections.

    Every resource turns Degraded with the reason, each announces it with one Warning Event
    however often it is retried, the liveness probe keeps answering (and says Rucio is down),
    and once Rucio answers again every resource converges with exactly one rule and one
    Recovered Event.
    """
    # The outage is of a Rucio server of the test's own: stopping the shared one would fail
    # whatever else talks to it. So is the operator, which talks to that server.
    server = private_rucio_server
    process = _private_operator(server, operator_env, tmp_path)
    storage = RucioStorage(server.settings(rucio_calls_per_second=10_000))
    core = kubernetes.client.CoreV1Api(kube_api)
    begin, end = {
        "hang": (server.freeze_api, server.thaw_api),
        "refuse": (server.stop_api, server.start_api),
    }[outage]
    try:
        site = _site_body(secrets.token_hex(3))
        custom_objects.create("sites", site)
        until(
            "the Site to be Ready on the private Rucio",
            lambda: (
                (
                    condition_of(custom_objects.get("sites", site["metadata"]["name"]), "Ready")
                    or {}
                ).get("status")
                == "True"
            ),
            timeout=60,
        )
        facility = site["spec"]["facility"]
        data = RucioData(storage, None)
        first, second = data.dataset(rse=f"{facility}_DISK"), data.dataset(rse=f"{facility}_DISK")

        def condition(name, type_):
            body = custom_objects.get("replicationrules", name, namespace)
            return condition_of(body, type_) or {}

        created = {
            "steady": custom_objects.create(
                "replicationrules", _rule_body("steady", namespace, [first], f"{facility}_DISK")
            )
        }
        until("steady Ready", lambda: condition("steady", "Ready").get("status") == "True")
        unanswered = []

        def probe_answers():
            if _health(process) is None:
                unanswered.append(time.monotonic())

        begin()
        try:
            created["during"] = custom_objects.create(
                "replicationrules", _rule_body("during", namespace, [second], f"{facility}_DISK")
            )
            for name in created:
                until(
                    f"{name} Degraded: RucioUnavailable",
                    lambda name=name: (
                        condition(name, "Degraded").get("reason") == "RucioUnavailable"
                        and condition(name, "Degraded").get("status") == "True"
                    ),
                    timeout=90,
                    between=probe_answers,
                )

            def down_in_probe():
                health = _health(process) or {}
                return health if health.get("rucio", "").startswith("Rucio does not") else None

            health = until("the liveness probe to say Rucio does not answer", down_in_probe)
            assert "auditSchema" in health
            until(
                "three retries of the resource created during the outage",
                lambda: (
                    _retries(
                        custom_objects.get("replicationrules", "during", namespace), "rule_changed"
                    )
                    >= 3
                ),
                timeout=120,
                between=probe_answers,
            )
            assert unanswered == [], "the liveness probe stopped answering while Rucio was out"
            for name in created:
                assert _events(core, namespace, name, "RucioUnavailable") == 1, name
        finally:
            end()

        for name in created:
            until(
                f"{name} to converge after Rucio returns",
                lambda name=name: condition(name, "Ready").get("status") == "True",
                timeout=120,
            )
            until(
                f"{name}'s Recovered Event",
                lambda name=name: _events(core, namespace, name, "Recovered"),
                timeout=30,
            )
        # A call made while the thawed server still drains what queued during the freeze may
        # time out and mark Rucio down again for one probe's wait.
        until("the liveness probe to say Rucio is up", lambda: _rucio_up(process), timeout=60)
        for name, body in created.items():
            assert len(storage.list_rules(comment=owner_tag_of(body, cluster_id))) == 1, name
            assert _events(core, namespace, name, "RucioUnavailable") == 1, name
            assert _events(core, namespace, name, "Recovered") == 1, name
        janitor.release(between=lambda: server.daemons.run("judge-cleaner"))
    finally:
        process.stop()
        storage.close()


def test_operator_refuses_an_out_of_date_audit_schema(operator_env, tmp_path):
    env = {**operator_env, "STEWARD_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    done = subprocess.run(
        [str(STEWARD), "operator", "--standalone", "--liveness", "http://127.0.0.1:0/healthz"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "run `steward audit upgrade` first" in done.stdout + done.stderr


def test_an_embargo_ends_within_seconds_not_at_the_next_refresh(
    operator_env, tmp_path, custom_objects, rucio_storage, rucio_data, namespace, cluster_id
):
    # A 600 s refresh interval: only the edge timer can create the rule within the deadline.
    operator = OperatorProcess(
        {**operator_env, "STEWARD_REFRESH_INTERVAL": "600"}, tmp_path / "slow-operator.log"
    )
    operator.start(timeout=60)
    try:
        dataset = rucio_data.dataset()
        lifted = datetime.now(UTC) + timedelta(seconds=12)
        body = _rule_body(
            "embargo", namespace, [dataset], "IN2P3_DISK", notBefore=lifted.isoformat()
        )
        tag = owner_tag_of(custom_objects.create("replicationrules", body), cluster_id)

        def reason():
            found = custom_objects.get("replicationrules", "embargo", namespace)
            return (condition_of(found, "Ready") or {}).get("reason")

        until("Ready=False while embargoed", lambda: reason() == "WaitingForTransferWindow")
        assert rucio_storage.list_rules(comment=tag) == []

        rules = until(
            "a Rucio rule once the embargo ends",
            lambda: rucio_storage.list_rules(comment=tag),
            timeout=45,
        )
        assert datetime.now(UTC) >= lifted
        assert [rule.did for rule in rules] == [dataset]
    finally:
        operator.stop()


def test_a_downtime_starts_within_seconds_not_at_the_next_refresh(
    operator_env, tmp_path, custom_objects, rucio_storage
):
    operator = OperatorProcess(
        {**operator_env, "STEWARD_REFRESH_INTERVAL": "600"}, tmp_path / "slow-operator.log"
    )
    operator.start(timeout=60)
    try:
        body = _site_body(secrets.token_hex(3))
        disk = body["spec"]["rses"][0]["name"]
        start = datetime.now(UTC) + timedelta(seconds=12)
        body["spec"]["downtimes"] = [
            {
                "start": start.isoformat(),
                "end": (start + timedelta(hours=1)).isoformat(),
                "operations": ["write"],
                "rses": [disk],
            }
        ]
        custom_objects.create("sites", body)

        def writable():
            flags = rucio_storage.rse_availability([disk])[disk]
            return None if flags is None else flags.write

        until("the RSE registered and writable", lambda: writable() is True)
        until("write off once the downtime starts", lambda: writable() is False, timeout=45)
        assert datetime.now(UTC) >= start
    finally:
        operator.stop()


def test_a_resource_deleted_while_its_spec_is_invalid_still_releases_its_rules(
    e2e_site, custom_objects, rucio_storage, rucio_data, namespace, cluster_id
):
    facility = e2e_site["spec"]["facility"]
    dataset = rucio_data.dataset()
    created = custom_objects.create(
        "replicationrules",
        _rule_body("turned", namespace, [dataset], f"{facility}_DISK", deletionPolicy="Delete"),
    )
    (rule,) = until(
        "the rule", lambda: rucio_storage.list_rules(comment=owner_tag_of(created, cluster_id))
    )
    until(
        "the first status",
        lambda: (custom_objects.get("replicationrules", "turned", namespace) or {}).get("status"),
    )
    # The API server accepts this; only the operator's model knows Mars has no IANA zone.
    window = {"start": "08:00", "end": "18:00", "timezone": "Mars/Olympus_Mons"}
    custom_objects.patch(
        "replicationrules", "turned", namespace, {"spec": {"transferWindow": window}}
    )

    def invalid():
        body = custom_objects.get("replicationrules", "turned", namespace)
        return (condition_of(body, "Degraded") or {}).get("reason") == "InvalidSpec"

    until("Degraded: InvalidSpec", invalid)
    custom_objects.delete("replicationrules", "turned", namespace)
    until(
        "the resource to go",
        lambda: custom_objects.get("replicationrules", "turned", namespace) is None,
    )
    assert rucio_storage.get_rule(rule.id).expires_at is not None  # Delete, as last acted on


def test_a_held_release_goes_ahead_once_annotated_with_its_count(
    operator_env, tmp_path, custom_objects, rucio_storage, rucio_data, namespace, cluster_id
):
    operator = OperatorProcess(
        {**operator_env, "STEWARD_RELEASE_MAX_RULES": "2"}, tmp_path / "brake-operator.log"
    )
    operator.start(timeout=60)
    try:
        datasets = sorted(rucio_data.dataset(files=1) for _ in range(4))
        created = custom_objects.create(
            "replicationrules",
            _rule_body("brake", namespace, datasets, "NCSA_DISK", deletionPolicy="Delete"),
        )
        tag = owner_tag_of(created, cluster_id)
        until("four rules", lambda: len(rucio_storage.list_rules(comment=tag)) == 4)
        custom_objects.patch(
            "replicationrules", "brake", namespace, {"spec": {"selector": {"dids": datasets[:1]}}}
        )

        def held():
            body = custom_objects.get("replicationrules", "brake", namespace)
            found = condition_of(body, "Degraded") or {}
            return body if found.get("reason") == "ReleaseHeld" else None

        body = until("the release to be held", held)
        assert body["status"]["pendingRelease"] == 3
        assert all(r.expires_at is None for r in rucio_storage.list_rules(comment=tag))

        custom_objects.patch(
            "replicationrules",
            "brake",
            namespace,
            {"metadata": {"annotations": {"steward.lsst.io/approve-release": "3"}}},
        )
        until("three rules released", lambda: len(rucio_storage.list_rules(comment=tag)) == 1)

        def approval_used():
            body = custom_objects.get("replicationrules", "brake", namespace)
            annotations = body["metadata"].get("annotations") or {}
            degraded = (condition_of(body, "Degraded") or {}).get("status")
            return "steward.lsst.io/approve-release" not in annotations and degraded == "False"

        until("the approval used up and Degraded cleared", approval_used)
    finally:
        operator.stop()


def test_status_of_more_rules_than_the_sample_counts_them_and_lists_a_sample(
    e2e_site, custom_objects, rucio_storage, rucio_data, rucio_server, namespace, cluster_id
):
    """More rules than status lists: counts say all, the sample 100; drift beyond it repaired.

    Nothing reads the rule list from status: a rule deleted behind Steward's back whose id is
    not in the sample is restored all the same, from Rucio's own listing by owner tag.
    """
    from steward.services.replication import STATUS_SAMPLE  # noqa: PLC0415

    facility = e2e_site["spec"]["facility"]
    datasets = [rucio_data.dataset(rse=f"{facility}_DISK", files=1) for _ in range(130)]
    created = custom_objects.create(
        "replicationrules", _rule_body("many", namespace, datasets, f"{facility}_DISK")
    )
    tag = owner_tag_of(created, cluster_id)

    def ready():
        body = custom_objects.get("replicationrules", "many", namespace)
        return (condition_of(body, "Ready") or {}).get("status") == "True" and body

    body = until("Ready", ready, timeout=120, between=rucio_server.daemons.converge)
    rules = rucio_storage.list_rules(comment=tag)
    assert len(rules) == 130
    status = body["status"]
    assert status["ruleCount"] == 130
    assert status["counts"]["OK"] == 130
    assert status["ruleIds"] == sorted(r.id for r in rules)[:STATUS_SAMPLE]
    beyond = max(rules, key=lambda r: r.id)
    assert beyond.id not in status["ruleIds"]

    rucio_storage.delete_rule(beyond.id)
    until(
        "the rule beyond the sample to be restored",
        lambda: rucio_storage.get_rule(beyond.id).expires_at is None,
        timeout=60,
    )


def test_new_data_is_placed_incrementally_across_an_operator_restart(
    e2e_site, custom_objects, rucio_storage, rucio_data, namespace, steward_operator, cluster_id
):
    """The high-water mark lives in status: a restarted operator goes on listing only new DIDs."""
    facility = e2e_site["spec"]["facility"]
    raw = {"datatype": "raw"}
    existing = rucio_data.dataset(rse=f"{facility}_DISK", files=1, meta=raw)
    body = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {"name": "raw-incremental", "namespace": namespace},
        "spec": {
            # An exclusion: no Rucio subscription, Steward's own selection places new data.
            "selector": {"scope": rucio_data.scope, "match": raw, "exclude": [{"project": "x"}]},
            "destination": f"{facility}_DISK",
        },
    }
    tag = owner_tag_of(custom_objects.create("replicationrules", body), cluster_id)

    def placed(*dids):
        return {r.did for r in rucio_storage.list_rules(comment=tag)} >= set(dids)

    def selection():
        found = custom_objects.get("replicationrules", "raw-incremental", namespace)
        return ((found or {}).get("status") or {}).get("selection") or {}

    until("the existing dataset to be placed", lambda: placed(existing), timeout=60)
    first = until(
        "a full listing recorded", lambda: selection().get("highWaterMark") and selection()
    )
    assert first["newData"] == "Steward"

    arrived = rucio_data.dataset(rse=f"{facility}_DISK", files=1, meta=raw)
    until("the new dataset to be placed by a timer pass", lambda: placed(arrived), timeout=60)
    until("an incremental pass", lambda: selection().get("mode") == "Incremental", timeout=60)

    steward_operator.stop()
    after_restart = rucio_data.dataset(rse=f"{facility}_DISK", files=1, meta=raw)
    steward_operator.start()
    until("placed after the restart", lambda: placed(after_restart), timeout=60)

    def recorded():
        found = custom_objects.get("replicationrules", "raw-incremental", namespace)
        status = (found or {}).get("status") or {}
        return status.get("ruleCount") == 3 and status  # written with the pass that placed it

    status = until("the restart's pass recorded", recorded, timeout=60)
    assert status["selection"]["mode"] == "Incremental"
    # Nothing was listed in full again: the restarted operator started from the stored mark.
    assert status["selection"]["fullSyncTime"] == first["fullSyncTime"]
    assert len(rucio_storage.list_rules(comment=tag)) == 3
