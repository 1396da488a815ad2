"""`steward find` against the real API server and Rucio: owners named from the cluster."""

import json

import kubernetes
import pytest
from click.testing import CliRunner

from steward.cli.main import cli
from steward.services.ownership import owner_tag
from steward.storage.rucio import RuleSpec

pytestmark = [pytest.mark.kube, pytest.mark.rucio]


def _rule_body(name, namespace, scope):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"scope": scope, "match": {"datatype": "raw"}},
            "destination": "IN2P3_TAPE",
        },
    }


def test_find_names_the_resources_owning_each_rule(
    custom_objects, kube_api, namespace, operator_env, rucio_storage, rucio_data
):
    """The owner tag is a hash of the cluster's identity and the resource's UID; find hashes
    the UIDs of the cluster's resources and names the one whose tag a rule carries."""
    owned = rucio_data.dataset(meta={"datatype": "raw"})
    unowned = rucio_data.dataset(meta={"datatype": "raw"})
    body = custom_objects.create(
        "replicationrules", _rule_body("raw-to-tape", namespace, rucio_data.scope)
    )
    cluster = kubernetes.client.CoreV1Api(kube_api).read_namespace("kube-system").metadata.uid
    rule_id = rucio_storage.add_rule(
        owned, RuleSpec("IN2P3_TAPE", comment=owner_tag(cluster, body["metadata"]["uid"]))
    )
    env = {k: v for k, v in operator_env.items() if k.startswith(("STEWARD_", "KUBECONFIG"))}
    runner = CliRunner()

    result = runner.invoke(
        cli,
        ["find", "--scope", rucio_data.scope, "--meta", "datatype=raw", "--format", "json"],
        env=env,
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_did = {line["did"]: line for line in lines}
    assert set(by_did) == {owned, unowned}
    (rule,) = by_did[owned]["rules"]
    assert (rule["id"], rule["owner"], rule["steward"]) == (
        rule_id,
        f"ReplicationRule/{namespace}/raw-to-tape",
        True,
    )
    assert by_did[unowned]["rules"] == []
    assert by_did[owned]["replicas"][0]["rse"] == "NCSA_DISK"
    assert "2 found (2 matching the metadata, 1 pages)" in result.stderr

    text = runner.invoke(
        cli, ["find", "--scope", rucio_data.scope, "--rse", "NCSA_DISK"], env=env
    ).stdout
    assert f"owner ReplicationRule/{namespace}/raw-to-tape" in text
    assert "replica NCSA_DISK: 2/2 files available (AVAILABLE)" in text

    blind = runner.invoke(
        cli,
        ["find", "--scope", rucio_data.scope, "--no-owners", "--format", "json"],
        env={**env, "KUBECONFIG": "/nonexistent"},
    )
    assert blind.exit_code == 0, blind.output
    assert json.loads(blind.stdout.splitlines()[0])["did"] in {owned, unowned}
    rules = [r for line in blind.stdout.splitlines() for r in json.loads(line)["rules"]]
    assert [(r["owner"], r["steward"]) for r in rules] == [(None, True)]

    lost = runner.invoke(
        cli, ["find", "--scope", rucio_data.scope], env={**env, "KUBECONFIG": "/nonexistent"}
    )
    assert lost.exit_code == 1
    assert "no Kubernetes cluster to talk to (/nonexistent)" in lost.output


def test_bad_meta_is_refused_before_anything_is_asked():
    result = CliRunner().invoke(cli, ["find", "--meta", "datatype"])
    assert result.exit_code == 2
    assert "'datatype' is not KEY=VALUE" in result.output
