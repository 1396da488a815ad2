"""plan, apply, prune and history against the real API server, from a real git repository."""

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from steward.cli.main import cli
from steward.services.gitops import ANNOTATION_AUTHOR, ANNOTATION_COMMIT, ANNOTATION_PATH
from steward.storage.database import make_engine, upgrade
from steward.storage.kubernetes import KubeResources, ResourceKey, api_client

pytestmark = pytest.mark.kube

AUTHOR = "Jane Ops <jane@example.org>"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(
        repo,
        "-c",
        "user.name=Jane Ops",
        "-c",
        "user.email=jane@example.org",
        "commit",
        "-qm",
        message,
    )
    return _git(repo, "rev-parse", "HEAD")


def _site(name: str) -> dict:
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name},
        "spec": {
            "facility": name.upper().replace("-", "_"),
            "rses": [
                {
                    "name": f"{name.upper().replace('-', '_')}_TAPE{index}",
                    "type": "TAPE",
                    "attributes": {"custodial": True},
                    "protocols": [
                        {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/t"}
                    ],
                }
                for index in (1, 2)
            ],
        },
    }


def _rule(name: str, namespace: str, facility: str, copies: int = 1) -> dict:
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "ReplicationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"dids": [f"raw:{name}"]},
            "destination": f"site={facility}&type=TAPE",
            "copies": copies,
        },
    }


@pytest.fixture
def repo(tmp_path, namespace, monkeypatch):
    """A policy repository with one Site and three ReplicationRules, committed."""
    root = tmp_path / "policy-repo"
    (root / "sites").mkdir(parents=True)
    (root / "policies").mkdir()
    _git(root, "init", "-q")
    site = f"site-{uuid.uuid4().hex[:8]}"
    facility = site.upper().replace("-", "_")
    (root / "sites" / f"{site}.yaml").write_text(yaml.safe_dump(_site(site)))
    for name in ("alpha", "beta", "gamma"):
        (root / "policies" / f"{name}.yaml").write_text(
            "# Use case: 24\n" + yaml.safe_dump(_rule(name, namespace, facility))
        )
    _commit(root, "Add the policies")
    monkeypatch.chdir(root)
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(make_engine(database))
    monkeypatch.setenv("STEWARD_DATABASE_URL", database)
    return {"root": root, "site": site, "facility": facility, "namespace": namespace}


@pytest.fixture
def run(control_plane):
    def invoke(*args):
        return CliRunner().invoke(
            cli, [args[0], "--kubeconfig", str(control_plane.kubeconfig), *args[1:]]
        )

    return invoke


@pytest.fixture
def kube(control_plane):
    return KubeResources(api_client(control_plane.kubeconfig))


def test_plan_apply_plan(repo, run, kube):
    planned = run("plan", "--format", "json")
    assert planned.exit_code == 2, planned.output
    report = json.loads(planned.stdout)
    assert sorted((c["kind"], c["action"]) for c in report["changes"]) == [
        ("ReplicationRule", "create"),
        ("ReplicationRule", "create"),
        ("ReplicationRule", "create"),
        ("Site", "create"),
    ]

    applied = run("apply")
    assert applied.exit_code == 0, applied.output
    head = _git(repo["root"], "rev-parse", "HEAD")
    live = kube.get(ResourceKey("ReplicationRule", repo["namespace"], "alpha"))
    annotations = live["metadata"]["annotations"]
    assert annotations[ANNOTATION_COMMIT] == head
    assert annotations[ANNOTATION_PATH] == "policies/alpha.yaml"
    assert annotations[ANNOTATION_AUTHOR] == AUTHOR
    assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "steward-apply"

    again = run("plan")
    assert again.exit_code == 0, again.output
    assert "0 to create, 0 to update, 0 to prune, 4 unchanged" in again.output

    log = CliRunner().invoke(cli, ["audit", "log", "--action", "k8s.apply", "--format", "json"])
    rows = json.loads(log.stdout)
    assert len(rows) == 4
    assert {r["git_commit"] for r in rows} == {head}, rows
    assert {r["git_author"] for r in rows} == {AUTHOR}


def test_dirty_tree_is_refused_and_change_is_planned(repo, run, kube):
    assert run("apply").exit_code == 0
    path = repo["root"] / "policies" / "beta.yaml"
    path.write_text(
        "# Use case: 24\n" + yaml.safe_dump(_rule("beta", repo["namespace"], repo["facility"], 2))
    )
    refused = run("apply")
    assert refused.exit_code == 1
    assert "uncommitted changes in policies/beta.yaml" in refused.output
    key = ResourceKey("ReplicationRule", repo["namespace"], "beta")
    assert kube.get(key)["spec"]["copies"] == 1

    _commit(repo["root"], "Two copies of beta")
    planned = run("plan")
    assert planned.exit_code == 2
    assert "~ update ReplicationRule/" in planned.output
    assert "spec.copies: 1 -> 2" in planned.output
    assert run("apply").exit_code == 0
    assert kube.get(key)["spec"]["copies"] == 2


def test_prune_is_guarded_and_never_touches_foreign_resources(repo, run, kube):
    assert run("apply").exit_code == 0
    foreign = _rule("foreign", repo["namespace"], repo["facility"])
    kube.apply(foreign)

    (repo["root"] / "policies" / "gamma.yaml").unlink()
    (repo["root"] / "policies" / "beta.yaml").unlink()
    _commit(repo["root"], "Retire beta and gamma")

    planned = run("plan", "--prune")
    assert planned.exit_code == 2
    assert "- prune ReplicationRule/" in planned.output
    assert "DESTRUCTIVE" in planned.output
    assert "/foreign" not in planned.output

    refused = run("apply", "--prune")
    assert refused.exit_code == 1
    assert "prune would delete 2 of" in refused.output
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "gamma")) is not None

    done = run("apply", "--prune", "--allow-destructive")
    assert done.exit_code == 0, done.output
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "gamma")) is None
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "foreign")) is not None
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "alpha")) is not None


def test_invalid_files_change_nothing(repo, run, kube):
    (repo["root"] / "policies" / "alpha.yaml").write_text(
        "# Use case: 24\n"
        + yaml.safe_dump(_rule("alpha", repo["namespace"], "NOWHERE")).replace(
            "copies: 1", "copies: 0"
        )
    )
    result = run("apply", "--allow-dirty")
    assert result.exit_code == 1
    assert "nothing was planned or applied" in result.output
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "beta")) is None


def test_history_interleaves_commits_and_actions(repo, run):
    assert run("apply").exit_code == 0
    path = repo["root"] / "policies" / "alpha.yaml"
    path.write_text(
        "# Use case: 24\n" + yaml.safe_dump(_rule("alpha", repo["namespace"], repo["facility"], 2))
    )
    second = _commit(repo["root"], "Keep two copies of alpha")
    assert run("apply").exit_code == 0

    result = CliRunner().invoke(cli, ["history", "rr/alpha", "-n", repo["namespace"]])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("    ")]
    assert "commit" in lines[0]
    assert "Add the policies" in lines[0]
    assert "k8s.apply" in lines[1]
    assert "Keep two copies of alpha" in lines[2]
    assert f"from {second[:12]}" in lines[3]
    assert "+  copies: 2" in result.output
