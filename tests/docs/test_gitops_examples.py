"""The Argo CD and Flux examples of docs/gitops keep the settings docs/gitops.md promises.

These are the settings whose loss would delete data or hide failures: pruning, what deleting the
GitOps object does, the empty-source guard, ordering, and health checks that know Steward's
conditions. The CEL expressions themselves are not evaluated here (no CEL evaluator among the
development dependencies); docs/gitops.md says how they were checked.
"""

from pathlib import Path

import pytest
import yaml

from steward.constants import API_VERSION
from steward.models import KINDS

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "docs" / "gitops"
FLUX = GITOPS / "flux" / "kustomization.yaml"
APPLICATIONS = GITOPS / "argocd" / "applications.yaml"
KIND_NAMES = {info.kind for info in KINDS}


def _documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_name(path, kind):
    return {d["metadata"]["name"]: d for d in _documents(path) if d["kind"] == kind}


# Flux -------------------------------------------------------------------------------------------


def test_flux_source_is_one_git_repository_with_only_the_policy_paths():
    (source,) = _by_name(FLUX, "GitRepository").values()
    assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    kept = [line for line in source["spec"]["ignore"].splitlines() if line.startswith("!")]
    assert kept == ["!/sites/", "!/policies/"]


def test_flux_applies_sites_before_policies():
    kustomizations = _by_name(FLUX, "Kustomization")
    assert set(kustomizations) == {"steward-sites", "steward-policies"}
    sites, policies = kustomizations["steward-sites"], kustomizations["steward-policies"]
    assert sites["spec"]["path"] == "./sites"
    assert policies["spec"]["path"] == "./policies"
    assert "dependsOn" not in sites["spec"]
    assert policies["spec"]["dependsOn"] == [{"name": "steward-sites"}]


@pytest.mark.parametrize("name", ["steward-sites", "steward-policies"])
def test_flux_kustomization_settings(name):
    kustomization = _by_name(FLUX, "Kustomization")[name]
    spec = kustomization["spec"]
    assert kustomization["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": "steward-policies"}
    assert spec["prune"] is True
    assert spec["deletionPolicy"] == "Orphan"
    assert spec["wait"] is True
    assert spec["timeout"]
    assert spec["interval"]
    assert "targetNamespace" not in spec


def test_flux_health_expressions_cover_every_kind_once():
    seen = []
    for kustomization in _by_name(FLUX, "Kustomization").values():
        for expression in kustomization["spec"]["healthCheckExprs"]:
            assert expression["apiVersion"] == API_VERSION
            assert expression["current"]
            assert expression["failed"]
            seen.append((kustomization["metadata"]["name"], expression["kind"]))
    assert sorted(kind for _, kind in seen) == sorted(KIND_NAMES)
    assert ("steward-sites", "Site") in seen


def test_flux_health_expressions_follow_the_rules():
    expressions = {
        e["kind"]: e
        for k in _by_name(FLUX, "Kustomization").values()
        for e in k["spec"]["healthCheckExprs"]
    }
    for kind, expression in expressions.items():
        assert "c.type == 'Degraded' && c.status == 'True'" in expression["failed"], kind
    assert "c.reason != 'ScheduledDowntime'" in expressions["Site"]["failed"]
    assert "c.type == 'Ready' && c.status == 'True'" in expressions["Site"]["current"]
    assert "'Blocked'" in expressions["RetentionPolicy"]["failed"]
    assert "'Failed'" in expressions["Campaign"]["failed"]


# Argo CD ------------------------------------------------------------------------------------------


def test_argocd_applications():
    applications = _by_name(APPLICATIONS, "Application")
    assert set(applications) == {"steward-sites", "steward-policies"}
    assert applications["steward-sites"]["spec"]["source"]["path"] == "sites"
    assert applications["steward-policies"]["spec"]["source"]["path"] == "policies"
    assert applications["steward-policies"]["spec"]["source"]["directory"]["recurse"] is True


@pytest.mark.parametrize("name", ["steward-sites", "steward-policies"])
def test_argocd_application_safety(name):
    application = _by_name(APPLICATIONS, "Application")[name]
    # Deleting the Application must not cascade into deleting what it synced.
    assert not application["metadata"].get("finalizers")
    policy = application["spec"]["syncPolicy"]
    assert policy["automated"]["prune"] is False
    assert policy["automated"]["allowEmpty"] is False
    options = policy["syncOptions"]
    assert "ServerSideApply=true" in options
    assert not any(o.startswith("CreateNamespace") for o in options)
