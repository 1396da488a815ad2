"""docs/deploy.md and the Argo CD example name what the rendered manifests contain."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_argocd_application_points_at_rendered_manifests():
    (app,) = [
        d
        for d in yaml.safe_load_all((ROOT / "docs/gitops/argocd/steward-site.yaml").read_text())
        if d
    ]
    assert app["kind"] == "Application"
    path = ROOT / app["spec"]["source"]["path"]
    assert path.is_dir()
    assert any(path.glob("*-deployment-steward.yaml"))
    ignored = {d["kind"]: d for d in app["spec"]["ignoreDifferences"]}
    assert ignored["Secret"]["name"] == "steward-webhook-tls"
    assert (path / "04-secret-steward-webhook-tls.yaml").is_file()
    assert ignored["ValidatingWebhookConfiguration"]["name"] == "steward"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_deploy_doc_commands_name_existing_files():
    text = (ROOT / "docs/deploy.md").read_text()
    for name in (
        "manifests/base",
        "deploy/values.yaml",
        "Containerfile",
        "docs/gitops/argocd/steward-site.yaml",
    ):
        assert name in text
        assert (ROOT / name).exists(), name
    for secret in ("steward-rucio", "steward-audit-database", "steward-audit-signing-key"):
        assert f"secret generic {secret}" in text
