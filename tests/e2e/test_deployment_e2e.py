"""Steward deployed as a site deploys it: rendered manifests, rendered identity, one leader.

manifests/base/ is applied with kubectl to a control plane of its own; the operator runs with
nothing but a token the API server minted for the rendered ServiceAccount (TokenRequest), so
every call it makes is authorised by the rendered roles, and a missing verb fails these tests
(the operator's log must hold no 403). Through the real API server: the webhook refuses a bad
policy with validate's words, fails closed while down, and two real operator processes elect
one leader that a standby replaces after a SIGKILL, with no duplicate Rucio rule.
"""

import base64
import json
import re
import secrets
import signal
import socket

import kubernetes
import pytest
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from steward.cli.main import cli
from steward.constants import FINALIZER
from steward.storage.kubernetes import cluster_identity
from support.campaigns import campaign_body
from support.deployment import (
    MANIFESTS,
    NAMESPACE,
    ROOT,
    WEBHOOKS,
    families_of,
    load_yaml,
    metrics_of,
    total,
)
from support.operator import CustomObjects, condition_of, owner_tag_of
from support.waiting import until

pytestmark = [pytest.mark.kube, pytest.mark.rucio]

BROKEN = ROOT / "tests" / "data" / "broken" / "rse-expression-no-matching-rse.yaml"


@pytest.fixture(scope="module")
def leader(site_deployment):
    """The module's operator process (its webhook is the one the configuration calls)."""
    process = site_deployment.operator("steward-a")
    process.start(timeout=90)
    # kopf serves the webhook from a task of its own, which may listen only after the
    # liveness endpoint answers: until it does, the API server refuses every Site.
    until(
        "the webhook to listen",
        lambda: _listening(int(process.env["STEWARD_WEBHOOK_PORT"])),
        timeout=60,
    )
    yield process
    process.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def objects(site_deployment):
    return CustomObjects(site_deployment.api)


def _site_body(name, facility, **spec):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name},
        "spec": {
            "facility": facility,
            "rses": [
                {
                    "name": f"{facility}_DISK",
                    "type": "DISK",
                    "protocols": [
                        {
                            "scheme": "mock",
                            "hostname": "localhost",
                            "port": 0,
                            "prefix": f"/tmp/steward-mock/{facility.lower()}",
                            "impl": "rucio.rse.protocols.mock.Default",
                        }
                    ],
                }
            ],
            **spec,
        },
    }


@pytest.fixture(scope="module")
def site(site_deployment, leader, objects):
    """A Site registered in Rucio by the operator acting as the rendered identity."""
    suffix = secrets.token_hex(3)
    facility = f"D{suffix}".upper()
    name = f"deploy-{suffix}"
    objects.create("sites", _site_body(name, facility))
    until(
        "the Site to be Ready",
        lambda: (condition_of(objects.get("sites", name), "Ready") or {}).get("status") == "True",
        timeout=90,
    )
    return {"name": name, "facility": facility, "rse": f"{facility}_DISK"}


def _rule(name, dids, destination, **spec):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"dids": dids}, "destination": destination, **spec},
    }


def _ready(objects, name):
    body = objects.get("replicationrules", name, NAMESPACE)
    return (condition_of(body, "Ready") or {}).get("status") == "True" and body


_FORBIDDEN = re.compile(r"\b403\b|[Ff]orbidden")
"""A refusal in a log line; ``\b`` keeps a timestamp's ``...914035Z`` from counting as one."""


def _forbidden_lines(process):
    return [line for line in process.log.read_text().splitlines() if _FORBIDDEN.search(line)]


def test_rendered_manifests_applied_cleanly(site_deployment):
    files = sorted(MANIFESTS.glob("*.yaml"))
    for path in files:
        document = load_yaml(path.read_text())[0]
        name = document["metadata"]["name"]
        assert f"{document['kind'].lower()}" in site_deployment.applied.lower(), path
        assert name in site_deployment.applied, path
    assert "serverside-applied (server dry run)" in site_deployment.applied
    assert "error" not in site_deployment.applied.lower()
    stored = [p for p in files if p not in WEBHOOKS]
    shown = site_deployment.kubectl("get", *(f"-f={p}" for p in stored), "-o", "yaml").stdout
    kinds = {d["kind"] for d in load_yaml(shown)[0]["items"]}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "PriorityClass",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ClusterKopfPeering",
    } == kinds


def test_operator_works_under_the_rendered_identity_alone(
    site_deployment, leader, site, objects, rucio_data, rucio_server, rucio_storage
):
    datasets = [rucio_data.dataset(rse=site["rse"]) for _ in range(2)]
    created = objects.create("replicationrules", _rule("placed", datasets, site["rse"]))
    body = until("Ready", lambda: _ready(objects, "placed"), timeout=90)
    assert body["status"]["counts"]["OK"] == 2
    tag = owner_tag_of(created, cluster_identity(site_deployment.api))
    rules = rucio_storage.list_rules(comment=tag)
    assert sorted(r.did for r in rules) == sorted(datasets)
    # The identity is the token's alone: kopf's peering, Events, finalizers and status
    # patches, the webhook's Secret and caBundle all went through the rendered roles.
    assert leader.env["KUBECONFIG"] == str(site_deployment.identity())
    assert "client-certificate" not in site_deployment.identity().read_text()
    events = kubernetes.client.CoreV1Api(site_deployment.api).list_namespaced_event(NAMESPACE)
    assert any(e.source.component == "kopf" for e in events.items)
    assert _forbidden_lines(leader) == []


def test_identity_gets_403_for_everything_else(site_deployment, leader, site):
    api = kubernetes.config.new_client_from_config(config_file=str(site_deployment.identity()))
    core = kubernetes.client.CoreV1Api(api)
    apps = kubernetes.client.AppsV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    refused = {
        "read another Secret in its namespace": lambda: core.read_namespaced_secret(
            "steward-rucio", NAMESPACE
        ),
        "list Secrets": lambda: core.list_namespaced_secret(NAMESPACE),
        "read a Secret elsewhere": core.list_secret_for_all_namespaces,
        "delete a Site": lambda: custom.delete_cluster_custom_object(
            "steward.lsst.io", "v1alpha1", "sites", site["name"]
        ),
        "delete its own Deployment": lambda: apps.delete_namespaced_deployment(
            "steward", NAMESPACE
        ),
        "read a namespace other than kube-system": lambda: core.read_namespace("default"),
        "list nodes": core.list_node,
        "patch another webhook configuration": lambda: (
            admission.patch_validating_webhook_configuration(
                "other",
                {"metadata": {"labels": {"a": "b"}}},
                _content_type="application/merge-patch+json",
            )
        ),
        "patch another peering object": lambda: custom.patch_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", "other", {"status": {}}
        ),
        "get a Site (kopf only lists and watches)": lambda: custom.get_cluster_custom_object(
            "steward.lsst.io", "v1alpha1", "sites", site["name"]
        ),
    }
    with api:
        for what, call in refused.items():
            with pytest.raises(ApiException) as raised:
                call()
            assert raised.value.status == 403, what
        # What it needs, it has.
        assert core.read_namespaced_secret("steward-webhook-tls", NAMESPACE).data["ca.crt"]
        assert core.read_namespace("kube-system").metadata.uid


def _validate_message(monkeypatch):
    """What ``steward validate`` prints for the broken file, less ``path:line:column: ``."""
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(cli, ["validate", str(BROKEN)])
    assert result.exit_code == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(str(BROKEN))]
    return re.sub(r"^\S+:\d+:\d+: ", "", line)


def test_webhook_refuses_with_validates_message(site_deployment, leader, site, monkeypatch):
    message = _validate_message(monkeypatch)
    assert message.startswith("ReplicationRule/raw-to-slac: spec.destination:")
    for dry_run in ([], ["--dry-run=server"]):
        result = site_deployment.kubectl("apply", f"-f={BROKEN}", *dry_run, check=False)
        assert result.returncode == 1
        assert "denied the request" in result.stderr
        assert message in result.stderr
    assert (
        site_deployment.kubectl("get", "rr", "raw-to-slac", "-n", NAMESPACE, check=False).returncode
        == 1
    )
    samples = metrics_of(leader)
    assert total(samples, "steward_admission_reviews_total", decision="refused") >= 1


def test_webhook_admits_a_good_policy_and_warns_of_an_unknown_peer_site(
    site_deployment, leader, site
):
    good = _rule("admitted", ["scope:name"], site["rse"])
    result = site_deployment.kubectl("apply", "-f=-", stdin=json.dumps(good))
    assert "created" in result.stdout
    suffix = secrets.token_hex(3)
    peer = _site_body(
        f"peer-{suffix}",
        f"P{suffix}".upper(),
        distances=[{"site": "not-yet-created", "distance": 1}],
    )
    result = site_deployment.kubectl("apply", "-f=-", stdin=json.dumps(peer))
    assert "created" in result.stdout
    assert "Warning: Site/peer-" in result.stderr
    assert "unknown site 'not-yet-created'" in result.stderr


def test_webhook_down_refuses_spec_changes_but_not_metadata(site_deployment, leader, site):
    good = _rule("while-down", ["scope:other"], site["rse"])
    site_deployment.kubectl("apply", "-f=-", stdin=json.dumps(good))
    leader.stop()
    try:
        changed = _rule("while-down", ["scope:other"], site["rse"], copies=1, priority=4)
        result = site_deployment.kubectl("apply", "-f=-", stdin=json.dumps(changed), check=False)
        assert result.returncode == 1
        assert "failed calling webhook" in result.stderr
        new = _rule("new-while-down", ["scope:x"], site["rse"])
        assert (
            site_deployment.kubectl("apply", "-f=-", stdin=json.dumps(new), check=False).returncode
            == 1
        )
        # Metadata-only changes (what kopf itself writes) never wait for the webhook.
        site_deployment.kubectl("label", "rr", "while-down", "-n", NAMESPACE, "team=ops")
        site_deployment.kubectl(
            "annotate", "site", site["name"], "steward.lsst.io/note=maintenance"
        )
    finally:
        leader.start(timeout=90)
    result = site_deployment.kubectl("apply", "-f=-", stdin=json.dumps(changed))
    assert "configured" in result.stdout


def test_a_new_rule_has_kopfs_finalizer_from_admission_and_kopf_never_patches_it(
    site_deployment, leader, site, objects, rucio_data
):
    dataset = rucio_data.dataset(rse=site["rse"])
    created = objects.create("replicationrules", _rule("finalized", [dataset], site["rse"]))
    assert created["metadata"]["finalizers"] == [FINALIZER]
    body = until("Ready", lambda: _ready(objects, "finalized"), timeout=90)
    assert body["metadata"]["finalizers"] == [FINALIZER]
    # No update of the object wrote it: kopf's own patch would show as an Update owning it
    # (the webhook's mutation of the create is owned by no manager).
    writes = [
        entry["operation"]
        for entry in body["metadata"]["managedFields"]
        if "f:finalizers" in entry.get("fieldsV1", {}).get("f:metadata", {})
    ]
    assert "Update" not in writes, body["metadata"]["managedFields"]
    samples = metrics_of(leader)
    assert total(samples, "steward_admission_reviews_total", decision="finalized") >= 1


def test_metrics_are_served_over_http(site_deployment, leader, site, objects, rucio_data):
    dataset = rucio_data.dataset(rse=site["rse"])
    objects.create("replicationrules", _rule("measured", [dataset], site["rse"]))
    until("Ready", lambda: _ready(objects, "measured"), timeout=90)
    objects.create("replicationrules", _rule("missing-did", ["nosuchscope:nothing"], site["rse"]))
    until(
        "a Rucio error",
        lambda: total(metrics_of(leader), "steward_rucio_errors_total") > 0,
        timeout=60,
    )
    until(
        "the rule's states",
        lambda: (
            total(metrics_of(leader), "steward_rucio_rules", namespace=NAMESPACE, name="measured")
            == 1
        ),
        timeout=30,
    )
    until(
        "a timer pass's gap since the rule's last pass",
        lambda: (
            total(metrics_of(leader), "steward_refresh_gap_seconds_count", kind="ReplicationRule")
            > 0
        ),
        timeout=60,
    )
    samples = metrics_of(leader)
    assert total(samples, "steward_reconciles_total", kind="ReplicationRule", outcome="success")
    assert total(samples, "steward_reconciles_total", kind="Site", outcome="success")
    assert total(samples, "steward_reconcile_seconds_count", kind="ReplicationRule")
    assert total(samples, "steward_rucio_calls_total", operation="add_replication_rule")
    assert total(samples, "steward_rucio_call_seconds_count", operation="add_replication_rule")
    assert (
        total(samples, "steward_rucio_rules", namespace=NAMESPACE, name="measured", state="OK") == 1
    )
    assert total(samples, "steward_external_actions_total", kind="ReplicationRule")
    # Families of code landing elsewhere: exposed, without series until that code lands.
    assert {
        "steward_deletion_plans",
        "steward_campaign_invocations",
        "steward_audit_checkpoint_age_seconds",
    } <= families_of(leader)


def test_logs_are_json_lines_naming_what_was_done_without_secrets(
    site_deployment, leader, site, objects, rucio_data, rucio_server
):
    dataset = rucio_data.dataset(rse=site["rse"])
    objects.create("replicationrules", _rule("logged", [dataset], site["rse"]))
    until("Ready", lambda: _ready(objects, "logged"), timeout=90)
    text = leader.log.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records
    added = [  # the intent row, logged before Rucio is asked, is not the rule
        r
        for r in records
        if r.get("action") == "rucio.rule.add"
        and r.get("name") == "logged"
        and r.get("result") == "success"
    ]
    assert len(added) == 1
    (record,) = added
    assert record["kind"] == "ReplicationRule"
    assert record["namespace"] == NAMESPACE
    assert re.fullmatch(r"[0-9a-f]{32}", record["rule_id"])
    kopf_records = [r for r in records if r.get("logger", "").startswith("kopf.objects")]
    assert any(r.get("name") == "logged" and r.get("kind") for r in kopf_records)
    token = site_deployment.identity().read_text().split("token: ", 1)[1].split()[0]
    key = (
        kubernetes.client.CoreV1Api(site_deployment.api)
        .read_namespaced_secret("steward-webhook-tls", NAMESPACE)
        .data["tls.key"]
    )
    key_body = "".join(base64.b64decode(key).decode().splitlines()[1:-1])
    for secret in (rucio_server.password.get_secret_value(), token, key, key_body[:40]):
        assert secret not in text


def test_one_leader_acts_and_a_standby_takes_over_after_a_kill(
    site_deployment, leader, site, objects, rucio_data, rucio_storage
):
    standby = site_deployment.operator("steward-b")
    standby.start(timeout=90)
    try:
        first = [rucio_data.dataset(rse=site["rse"]) for _ in range(3)]
        created = {
            "before-kill": objects.create(
                "replicationrules", _rule("before-kill", first, site["rse"])
            )
        }
        until("Ready", lambda: _ready(objects, "before-kill"), timeout=90)
        samples = metrics_of(standby)
        assert total(samples, "steward_reconciles_total") == 0
        assert total(samples, "steward_rucio_calls_total") == 0
        leader.kill(signal.SIGKILL)
        second = [rucio_data.dataset(rse=site["rse"]) for _ in range(3)]
        created["after-kill"] = objects.create(
            "replicationrules", _rule("after-kill", second, site["rse"])
        )
        # The lease (STEWARD_PEERING_LIFETIME) is 10 s; allow for keep-alive jitter.
        until("the standby to act", lambda: _ready(objects, "after-kill"), timeout=60)
        assert total(metrics_of(standby), "steward_reconciles_total") > 0
        cluster = cluster_identity(site_deployment.api)
        for name, dids in (("before-kill", first), ("after-kill", second)):
            rules = rucio_storage.list_rules(comment=owner_tag_of(created[name], cluster))
            assert sorted(r.did for r in rules) == sorted(dids), name  # one rule per DID
    finally:
        standby.stop()
        leader.start(timeout=90)


def test_a_campaign_runs_under_the_rendered_identity_alone(
    site_deployment, leader, objects, rucio_data
):
    # The rendered ConfigMap says which site's campaigns this operator runs (base); the
    # campaign's Site must exist (admission checks it) and its Jobs need a node to run on.
    assert site_deployment.settings()["STEWARD_SITE"] == "base"
    facility = f"B{secrets.token_hex(3)}".upper()
    objects.create("sites", {**_site_body("base", facility), "metadata": {"name": "base"}})
    site_deployment.plane.create_nodes(1)
    steps = [{"name": "one"}, {"name": "two", "dependsOn": ["one"]}]
    body = campaign_body(
        "deployed",
        NAMESPACE,
        invocations=3,
        steps=steps,
        scope=rucio_data.scope,
        site="base",
        outputs={"scope": rucio_data.scope, "rse": f"{facility}_DISK"},
    )
    objects.create("campaigns", body)

    def succeeded():
        campaign = objects.get("campaigns", "deployed", NAMESPACE) or {}
        return (campaign.get("status") or {}).get("phase") == "Succeeded" and campaign

    campaign = until("the campaign to succeed", succeeded, timeout=240)
    assert campaign["status"]["progress"] == "6/6"
    pods = kubernetes.client.CoreV1Api(site_deployment.api).list_namespaced_pod(
        NAMESPACE, label_selector="steward.lsst.io/campaign=deployed"
    )
    assert {p.spec.priority_class_name for p in pods.items} == {"steward-campaign-normal"}
    # Jobs, pods (the ledger finalizer), ConfigMaps, the rendered PriorityClasses and the
    # Site were all reached through the rendered roles: no call was refused.
    assert _forbidden_lines(leader) == []
