"""plan, apply, prune and history against the real API server, from a real git repository."""

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from steward.cli.main import cli
from steward.models.replication import ReplicationRule
from steward.services.audit import AuditService, ResourceRef
from steward.services.gitops import (
    ANNOTATION_AUTHOR,
    ANNOTATION_COMMIT,
    ANNOTATION_DIRTY,
    ANNOTATION_PATH,
)
from steward.services.replication import ReplicationService
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.kubernetes import KubeResources, ResourceKey, api_client
from steward.storage.rucio import RuleSpec
from support.waiting import until

pytestmark = pytest.mark.kube

AUTHOR = "Jane Ops <jane@example.org>"
SECOND = timedelta(seconds=1)


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
def repo(tmp_path, namespace, monkeypatch, database_url):
    """A policy repository with one Site and three ReplicationRules, committed."""
    root = tmp_path / "policy-repo"
    (root / "sites").mkdir(parents=True)
    (root / "policies").mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.name", "Jane Ops")
    _git(root, "config", "user.email", "jane@example.org")
    site = f"site-{uuid.uuid4().hex[:8]}"
    facility = site.upper().replace("-", "_")
    (root / "sites" / f"{site}.yaml").write_text(yaml.safe_dump(_site(site)))
    for name in ("alpha", "beta", "gamma"):
        (root / "policies" / f"{name}.yaml").write_text(
            "# Use case: 24\n" + yaml.safe_dump(_rule(name, namespace, facility))
        )
    _commit(root, "Add the policies")
    monkeypatch.chdir(root)
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("STEWARD_DATABASE_URL", database_url)
    for variable in ("STEWARD_RUCIO_HOST", "RUCIO_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
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
    assert "2 destructive changes" in refused.output
    assert f"ReplicationRule/{repo['namespace']}/beta (deletes" in refused.output
    assert "nothing was applied" in refused.output
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "gamma")) is not None

    too_many = run("apply", "--prune", "--allow-destructive")
    assert too_many.exit_code == 1
    assert "prune would delete 2 of 4 resources" in too_many.output
    assert "--max-prune-fraction" in too_many.output
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "gamma")) is not None

    done = run("apply", "--prune", "--allow-destructive", "--max-prune-fraction", "0.5")
    assert done.exit_code == 0, done.output
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "gamma")) is None
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "foreign")) is not None
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "alpha")) is not None
    log = CliRunner().invoke(cli, ["audit", "log", "--action", "k8s.prune", "--format", "json"])
    rows = json.loads(log.stdout)
    assert len(rows) == 2
    assert all(r["message"].startswith(f"DESTRUCTIVE, allowed by {AUTHOR}") for r in rows), rows


def test_destination_change_is_refused_without_the_flag(repo, run, kube):
    assert run("apply").exit_code == 0
    path = repo["root"] / "policies" / "alpha.yaml"
    changed = _rule("alpha", repo["namespace"], repo["facility"])
    changed["spec"]["destination"] = f"{repo['facility']}_TAPE1"
    path.write_text("# Use case: 24\n" + yaml.safe_dump(changed))
    _commit(repo["root"], "Move alpha to its first tape")
    planned = run("plan")
    assert planned.exit_code == 2, planned.output
    assert "!! DESTRUCTIVE" in planned.output
    assert "!! moves replicas to another destination" in planned.output

    refused = run("apply")
    assert refused.exit_code == 1
    assert "moves replicas to another destination" in refused.output
    key = ResourceKey("ReplicationRule", repo["namespace"], "alpha")
    assert kube.get(key)["spec"]["destination"].endswith("type=TAPE")
    assert run("apply", "--allow-destructive").exit_code == 0
    assert kube.get(key)["spec"]["destination"].endswith("_TAPE1")


def test_dirty_apply_is_marked_dirty_everywhere(repo, run, kube):
    assert run("apply").exit_code == 0
    head = _git(repo["root"], "rev-parse", "HEAD")
    path = repo["root"] / "policies" / "beta.yaml"
    path.write_text(
        "# Use case: 24\n" + yaml.safe_dump(_rule("beta", repo["namespace"], repo["facility"], 2))
    )
    applied = run("apply", "--allow-dirty")
    assert applied.exit_code == 0, applied.output
    assert "applying uncommitted changes in policies/beta.yaml: marked dirty" in applied.output
    key = ResourceKey("ReplicationRule", repo["namespace"], "beta")
    annotations = kube.get(key)["metadata"]["annotations"]
    assert annotations[ANNOTATION_DIRTY] == "true"
    assert annotations[ANNOTATION_COMMIT] == head
    assert (
        ANNOTATION_DIRTY
        not in kube.get(ResourceKey("ReplicationRule", repo["namespace"], "alpha"))["metadata"][
            "annotations"
        ]
    )

    log = CliRunner().invoke(cli, ["audit", "log", "--name", "beta", "--format", "json"])
    last = json.loads(log.stdout)[-1]
    assert last["git_commit"] == f"{head}-dirty"
    assert "uncommitted changes (--allow-dirty): not the content of commit" in last["message"]
    history = CliRunner().invoke(cli, ["history", "rr/beta", "-n", repo["namespace"]])
    assert f"from {head[:12]} with uncommitted changes" in history.output

    _commit(repo["root"], "Two copies of beta")
    assert run("apply").exit_code == 0
    assert ANNOTATION_DIRTY not in kube.get(key)["metadata"]["annotations"]


def test_plan_says_when_rucio_is_not_consulted(repo, run, monkeypatch):
    planned = run("plan")
    assert planned.exit_code == 2
    assert "Rucio: NOT consulted: Rucio is not configured" in planned.output
    report = json.loads(run("plan", "--format", "json").stdout)
    assert report["rucio"]["consulted"] is False
    required = run("plan", "--require-rucio")
    assert required.exit_code == 1
    assert "--require-rucio" in required.output

    monkeypatch.setenv("STEWARD_RUCIO_HOST", "http://127.0.0.1:1")
    unreachable = run("plan", "--format", "json")
    assert unreachable.exit_code == 2
    status = json.loads(unreachable.stdout)["rucio"]
    assert status["consulted"] is False
    assert status["reason"].startswith("Rucio does not answer")


def test_plan_fails_what_the_api_server_would_refuse(repo, run, kube):
    lost = _rule("lost", f"no-such-namespace-{uuid.uuid4().hex[:6]}", repo["facility"])
    (repo["root"] / "policies" / "lost.yaml").write_text("# Use case: 24\n" + yaml.safe_dump(lost))
    _commit(repo["root"], "A rule in a namespace that does not exist")
    planned = run("plan")
    assert planned.exit_code == 1
    assert "!! REFUSED" in planned.output
    assert "the API server refuses it" in planned.output
    assert run("apply").exit_code == 1
    assert kube.get(ResourceKey("ReplicationRule", repo["namespace"], "alpha")) is None


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


@pytest.mark.rucio
def _use_rucio(monkeypatch, rucio_server):
    """Point the CLI at the test's Rucio server, as Steward's account."""
    settings = rucio_server.settings()
    for name, value in {
        "STEWARD_RUCIO_HOST": settings.rucio_host,
        "STEWARD_RUCIO_ACCOUNT": settings.rucio_account,
        "STEWARD_RUCIO_USERNAME": settings.rucio_username,
        "STEWARD_RUCIO_PASSWORD": settings.rucio_secret().get_secret_value(),
    }.items():
        monkeypatch.setenv(name, value)


def test_plan_shows_rucio_bytes_and_apply_names_who_allowed_the_move(
    repo, run, kube, rucio_server, rucio_data, rucio_storage, monkeypatch, database_url, cluster_id
):
    _use_rucio(monkeypatch, rucio_server)
    mirror = _site(f"mirror-{uuid.uuid4().hex[:8]}")
    mirror["spec"]["rses"] = [
        {**mirror["spec"]["rses"][0], "name": rse, "type": "DISK", "attributes": {}}
        for rse in ("NCSA_DISK", "IN2P3_DISK")
    ]
    (repo["root"] / "sites" / "mirror.yaml").write_text(yaml.safe_dump(mirror))
    placed = _rule("placed", repo["namespace"], repo["facility"])
    placed["spec"].update(
        {
            "selector": {"dids": [rucio_data.dataset(), rucio_data.dataset()]},
            "destination": "NCSA_DISK",
        }
    )
    policy = repo["root"] / "policies" / "placed.yaml"
    policy.write_text("# Use case: 24\n" + yaml.safe_dump(placed))
    _commit(repo["root"], "Place two datasets at NCSA")

    report = json.loads(run("plan", "--format", "json", "--require-rucio").stdout)
    assert report["rucio"]["consulted"] is True, report["rucio"]
    (change,) = [c for c in report["changes"] if c["name"] == "placed"]
    assert change["rucio"][0]["action"] == "create"
    assert change["rucio"][0]["place"] == {"NCSA_DISK": {"files": 4, "bytes": 4002}}
    assert run("apply").exit_code == 0

    # The operator's part, done here directly: place the data as the ReplicationRule says.
    audit = AuditService(make_sessionmaker(make_engine(database_url)))
    live = kube.get(ResourceKey("ReplicationRule", repo["namespace"], "placed"))
    ReplicationService(rucio=rucio_storage, audit=audit, cluster_id=cluster_id).reconcile(
        ReplicationRule.model_validate({k: v for k, v in live.items() if k != "status"}),
        ResourceRef(
            kind="ReplicationRule",
            namespace=repo["namespace"],
            name="placed",
            uid=live["metadata"]["uid"],
        ),
    )

    placed["spec"]["destination"] = "IN2P3_DISK"
    policy.write_text("# Use case: 24\n" + yaml.safe_dump(placed))
    _commit(repo["root"], "Move the two datasets to IN2P3")
    planned = run("plan", "--require-rucio")
    assert planned.exit_code == 2, planned.output
    assert "!! moves replicas to another destination" in planned.output
    assert (
        "-> Rucio: move 2 rules to IN2P3_DISK x1: place IN2P3_DISK: 4 files, 4.0 kB. "
        "release NCSA_DISK: 4 files, 4.0 kB. becomes deletable (no other rule locks it): "
        "NCSA_DISK: 4 files, 4.0 kB"
    ) in planned.output
    assert "Rucio: consulted (RucioStorage(host=" in planned.output

    refused = run("apply")
    assert refused.exit_code == 1
    assert f"ReplicationRule/{repo['namespace']}/placed (moves replicas" in refused.output
    assert run("apply", "--allow-destructive").exit_code == 0
    rows = json.loads(
        CliRunner().invoke(cli, ["audit", "log", "--name", "placed", "--format", "json"]).stdout
    )
    assert rows[-1]["message"].startswith(
        f"DESTRUCTIVE, allowed by {AUTHOR} with --allow-destructive: moves replicas"
    )


def _retention(name: str, namespace: str, dids: list[str], **spec) -> dict:
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "RetentionPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"dids": dids}, "lifetime": "1s", **spec},
    }


@pytest.mark.rucio
def test_plan_shows_a_retention_plan_judged_by_the_holds_in_the_cluster(
    repo, run, kube, rucio_server, rucio_storage, rucio_data, monkeypatch
):
    settings = rucio_server.settings()
    for name, value in {
        "STEWARD_RUCIO_HOST": settings.rucio_host,
        "STEWARD_RUCIO_ACCOUNT": settings.rucio_account,
        "STEWARD_RUCIO_USERNAME": settings.rucio_username,
        "STEWARD_RUCIO_PASSWORD": settings.rucio_secret().get_secret_value(),
    }.items():
        monkeypatch.setenv(name, value)
    free, held = rucio_data.dataset(), rucio_data.dataset()
    rules = {did: rucio_storage.add_rule(did, RuleSpec("NCSA_DISK")) for did in (free, held)}
    policies = repo["root"] / "policies"
    holder = _retention("legal", repo["namespace"], [rucio_data.did("nothing")], holds=[held])
    (policies / "legal.yaml").write_text(yaml.safe_dump(holder))
    _commit(repo["root"], "Hold one dataset")
    assert run("apply").exit_code == 0

    expire = _retention("scratch", repo["namespace"], [free, held], action="Delete")
    (policies / "scratch.yaml").write_text(yaml.safe_dump(expire))
    _commit(repo["root"], "Delete the scratch datasets after a second")
    _outlive(rucio_storage, rules)

    report = json.loads(run("plan", "--format", "json", "--require-rucio").stdout)
    (change,) = [c for c in report["changes"] if c["name"] == "scratch"]
    (impact,) = change["rucio"]
    files = rucio_storage.list_files(free)
    assert (impact["action"], impact["rules"]) == ("delete", 1)
    assert impact["release"] == {
        "NCSA_DISK": {"files": len(files), "bytes": sum(f.bytes for f in files)}
    }
    assert impact["deletable"] == impact["release"]  # no other rule locks them
    assert impact["gate"]["protected"] == {"LegalHold": 1}
    assert "kept by the deletion gate: LegalHold=1" in run("plan").output
    assert all(rucio_storage.get_rule(rule).expires_at is None for rule in rules.values())


def _free_and_held(rucio_storage, rucio_data):
    """Two datasets, each with a rule at NCSA_DISK (rule ids by DID)."""
    free, held = rucio_data.dataset(), rucio_data.dataset()
    return (
        free,
        held,
        {did: rucio_storage.add_rule(did, RuleSpec("NCSA_DISK")) for did in (free, held)},
    )


def _outlive(rucio_storage, rules):
    """Wait until the rules are older than the policies' lifetime (one second)."""
    born = max(rucio_storage.get_rule(rule).created_at for rule in rules.values())
    until("the rules to be older than the lifetime", lambda: datetime.now(UTC) > born + 2 * SECOND)


@pytest.mark.rucio
def test_plan_shows_a_released_hold_and_what_another_policy_then_removes(
    repo, run, kube, rucio_server, rucio_storage, rucio_data, monkeypatch
):
    _use_rucio(monkeypatch, rucio_server)
    free, held, rules = _free_and_held(rucio_storage, rucio_data)
    policies = repo["root"] / "policies"
    holder = _retention("legal", repo["namespace"], [rucio_data.did("nothing")], holds=[held])
    (policies / "legal.yaml").write_text(yaml.safe_dump(holder))
    _commit(repo["root"], "Hold one dataset")
    assert run("apply").exit_code == 0

    holder["spec"]["holds"] = []
    (policies / "legal.yaml").write_text(yaml.safe_dump(holder))
    expire = _retention("scratch", repo["namespace"], [free, held], action="Delete")
    (policies / "scratch.yaml").write_text(yaml.safe_dump(expire))
    _commit(repo["root"], "Release the hold and delete the scratch datasets")
    _outlive(rucio_storage, rules)

    report = json.loads(run("plan", "--format", "json", "--require-rucio").stdout)
    changes = {c["name"]: c for c in report["changes"]}
    assert changes["legal"]["destructive"] == [f"legal hold released on 1 DIDs: {held}"]
    (lost,) = changes["legal"]["lost_protections"]
    assert (lost["protection"], lost["dids"]) == ("LegalHold", [held])
    assert lost["by"] == f"RetentionPolicy/{repo['namespace']}/legal"
    # The scratch policy is judged without the hold the same plan releases.
    (impact,) = changes["scratch"]["rucio"]
    assert (impact["action"], impact["rules"], impact["gate"]["protected"]) == ("delete", 2, {})
    assert report["destructive"] == 1

    text = run("plan").output
    assert f"~ update RetentionPolicy/{repo['namespace']}/legal  !! DESTRUCTIVE" in text
    assert f"!! legal hold released on 1 DIDs: {held}" in text
    refused = run("apply")
    assert refused.exit_code == 1
    assert f"RetentionPolicy/{repo['namespace']}/legal (legal hold released" in refused.output
    key = ResourceKey("RetentionPolicy", repo["namespace"], "legal")
    assert kube.get(key)["spec"]["holds"] == [held]
    assert kube.get(ResourceKey("RetentionPolicy", repo["namespace"], "scratch")) is None
    assert run("apply", "--allow-destructive").exit_code == 0
    assert kube.get(key)["spec"].get("holds", []) == []


@pytest.mark.rucio
def test_pruning_a_hold_shows_what_a_policy_the_plan_leaves_alone_then_removes(
    repo, run, kube, rucio_server, rucio_storage, rucio_data, monkeypatch
):
    _use_rucio(monkeypatch, rucio_server)
    free, held, rules = _free_and_held(rucio_storage, rucio_data)
    policies = repo["root"] / "policies"
    holder = _retention("legal", repo["namespace"], [rucio_data.did("nothing")], holds=[held])
    (policies / "legal.yaml").write_text(yaml.safe_dump(holder))
    expire = _retention("scratch", repo["namespace"], [free, held], action="Delete")
    (policies / "scratch.yaml").write_text(yaml.safe_dump(expire))
    _commit(repo["root"], "Hold one dataset, delete the scratch datasets after a second")
    assert run("apply").exit_code == 0

    (policies / "legal.yaml").unlink()
    _commit(repo["root"], "Retire the legal policy")
    _outlive(rucio_storage, rules)
    report = json.loads(run("plan", "--prune", "--format", "json", "--require-rucio").stdout)
    (change,) = report["changes"]  # the scratch policy is unchanged
    assert change["action"] == "prune"
    assert change["destructive"] == [
        f"deletes RetentionPolicy/{repo['namespace']}/legal",
        f"legal hold released on 1 DIDs: {held}",
    ]
    (impact,) = change["rucio"]
    assert (impact["action"], impact["rules"], impact["gate"]["dids"]) == ("delete", 1, [held])
    assert impact["gate"]["requester"] == f"RetentionPolicy/{repo['namespace']}/scratch"
    text = run("plan", "--prune").output
    assert (
        f"then RetentionPolicy/{repo['namespace']}/scratch, which this plan does not change, "
        f"would delete them at its next cycle: RetentionPolicy/{repo['namespace']}/legal no "
        f"longer protects {held}"
    ) in text
    refused = run("apply", "--prune")
    assert refused.exit_code == 1
    assert f"RetentionPolicy/{repo['namespace']}/legal (deletes" in refused.output
    assert kube.get(ResourceKey("RetentionPolicy", repo["namespace"], "legal")) is not None


def test_pruning_a_policy_or_unpinning_shows_the_protection_it_takes_away(repo, run, kube):
    namespace = repo["namespace"]
    until_date = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    holder = _retention(
        "legal",
        namespace,
        ["raw:nothing"],
        holds=["raw:held-a", "raw:held-b"],
        locks=[{"name": "audit", "mode": "Governance", "until": until_date, "dids": ["raw:gov"]}],
    )
    base = _site(f"base-{uuid.uuid4().hex[:8]}")
    cache_rse = f"{base['spec']['facility']}_OODS"
    base["spec"]["rses"] = [
        {**base["spec"]["rses"][0], "name": cache_rse, "type": "CACHE", "attributes": {}}
    ]
    (repo["root"] / "sites" / "base.yaml").write_text(yaml.safe_dump(base))
    cache = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "OODSCache",
        "metadata": {"name": "oods", "namespace": namespace},
        "spec": {
            "site": base["metadata"]["name"],
            "rse": cache_rse,
            "instruments": ["LSSTCam"],
            "window": "30d",
            "capacity": "1TB",
            "pins": [{"selector": {"dids": ["raw:flat"]}, "reason": "calibrations"}],
        },
    }
    policies = repo["root"] / "policies"
    (policies / "legal.yaml").write_text("# Use case: 24\n" + yaml.safe_dump(holder))
    (policies / "oods.yaml").write_text("# Use case: 24\n" + yaml.safe_dump(cache))
    _commit(repo["root"], "Hold, lock and pin")
    applied = run("apply")
    assert applied.exit_code == 0, applied.output

    (policies / "legal.yaml").unlink()
    cache["spec"]["pins"] = []
    (policies / "oods.yaml").write_text("# Use case: 24\n" + yaml.safe_dump(cache))
    _commit(repo["root"], "Drop the legal policy and the pin")
    planned = run("plan", "--prune", "--format", "json")
    assert planned.exit_code == 2, planned.output
    changes = {c["name"]: c for c in json.loads(planned.stdout)["changes"]}
    assert changes["legal"]["action"] == "prune"
    assert changes["legal"]["destructive"] == [
        f"deletes RetentionPolicy/{namespace}/legal",
        "legal hold released on 2 DIDs: raw:held-a, raw:held-b",
        "governance lock removed from 1 DIDs: raw:gov",
    ]
    assert [lost["protection"] for lost in changes["legal"]["lost_protections"]] == [
        "LegalHold",
        "GovernanceLock",
    ]
    assert changes["oods"]["destructive"] == [f"pin removed from 1 DIDs: raw:flat (at {cache_rse})"]
    # Without Rucio the Kubernetes side still says what stops protecting.
    text = run("plan", "--prune").output
    assert "Rucio: NOT consulted" in text
    assert "!! legal hold released on 2 DIDs: raw:held-a, raw:held-b" in text

    refused = run("apply", "--prune")
    assert refused.exit_code == 1
    assert "2 destructive changes" in refused.output
    assert f"OODSCache/{namespace}/oods (pin removed from 1 DIDs" in refused.output
    assert kube.get(ResourceKey("RetentionPolicy", namespace, "legal")) is not None


def test_plan_shows_the_staging_a_new_campaign_creates(
    repo, run, rucio_server, rucio_data, monkeypatch
):
    _use_rucio(monkeypatch, rucio_server)
    site = _site(f"batch-{uuid.uuid4().hex[:8]}")
    site["spec"]["roles"] = ["batch"]
    site["spec"]["rses"] = [
        {**site["spec"]["rses"][0], "name": "NCSA_DISK", "type": "DISK", "attributes": {}}
    ]
    (repo["root"] / "sites" / "batch.yaml").write_text(yaml.safe_dump(site))
    _commit(repo["root"], "Add a batch site")
    assert run("apply").exit_code == 0
    campaign = {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": "drp", "namespace": repo["namespace"]},
        "spec": {
            "site": site["metadata"]["name"],
            "image": "example.org/pipelines:test",
            "steps": [{"name": "isr", "pipeline": "pipelines/drp.yaml#isr"}],
            "coverage": {"query": {"dids": [rucio_data.dataset(rse="NCSA_TAPE")]}},
            "outputs": {"scope": rucio_data.scope},
        },
    }
    (repo["root"] / "policies" / "drp.yaml").write_text(yaml.safe_dump(campaign))
    _commit(repo["root"], "Run DRP at the batch site")

    planned = run("plan", "--require-rucio")
    assert planned.exit_code == 2, planned.output
    assert (
        "-> Rucio: create 1 rules to NCSA_DISK x1: place NCSA_DISK: 2 files, 2.0 kB. "
        "Staging inputs (activity Staging, lifetime 30d)"
    ) in planned.output
