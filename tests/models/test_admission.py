"""The generated CRDs, installed in the real API server, admit the repository's files and
refuse broken documents with the field named (schema and CEL rules)."""

import uuid
from pathlib import Path

import kubernetes
import pytest
import yaml

from steward.exceptions import PermanentError
from steward.storage.kubernetes import KubeResources, api_client
from support.samples import CAMPAIGN, DELETE, OODS, RETENTION, RULE, patched

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube(control_plane, kube_api):
    core = kubernetes.client.CoreV1Api(kube_api)
    if "steward" not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": "steward"}})
    return KubeResources(api_client(control_plane.kubeconfig))


def _repository_documents():
    for path in sorted([*ROOT.glob("policies/**/*.yaml"), *ROOT.glob("sites/*.yaml")]):
        for document in yaml.safe_load_all(path.read_text()):
            yield pytest.param(document, id=f"{path.relative_to(ROOT)}")


@pytest.mark.parametrize("document", list(_repository_documents()))
def test_repository_files_are_admitted(kube, document):
    admitted = kube.apply(document, dry_run=True)
    assert admitted["kind"] == document["kind"]
    assert admitted["spec"].keys() >= document["spec"].keys()


def _namespaced(document, namespace):
    return patched(document, ("metadata", "namespace"), namespace)


@pytest.mark.parametrize(
    ("document", "path", "value", "message"),
    [
        (RULE, ("spec", "selector", "dids"), ["raw:a"], "give 'dids', or 'scope' with 'match'"),
        (RULE, ("spec", "selector", "scope"), DELETE, "a filter ('match' or 'name') needs 'scope'"),
        (RULE, ("spec", "selector", "name"), "raw *", "spec.selector.name"),
        (RULE, ("spec", "copies"), 0, "spec.copies"),
        (RULE, ("spec", "destinaton"), "x", ".spec.destinaton: field not declared in schema"),
        (RULE, ("spec", "lifetime"), "7 days", "spec.lifetime"),
        (RULE, ("spec", "publish"), True, "'publish: true' needs 'publishTo'"),
        (RETENTION, ("spec", "maxAge"), "30d", "exactly one of 'lifetime' or 'maxAge'"),
        (OODS, ("spec", "lowWatermark"), 0.95, "lowWatermark must be below highWatermark"),
        (
            CAMPAIGN,
            ("spec", "steps", 1, "dependsOn"),
            ["nothing"],
            "a step depends on a step that does not exist",
        ),
        (
            CAMPAIGN,
            ("spec", "steps", 1, "name"),
            "isr",
            'duplicate entries for key \\[name="isr"\\]',
        ),
        (RULE, ("metadata", "name"), "Upper", "metadata.name"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_broken_documents_are_refused_at_admission(kube, document, path, value, message):
    broken = patched(_namespaced(document, "steward"), path, value)
    with pytest.raises(PermanentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kube.apply(broken, dry_run=True)


def test_a_floor_at_or_below_the_high_watermark_is_refused(kube):
    broken = patched(_namespaced(OODS, "steward"), ("spec", "floorWatermark"), 0.85)
    with pytest.raises(PermanentError, match="floorWatermark must be above highWatermark"):
        kube.apply(broken, dry_run=True)


def _locked(name, until, mode="Compliance", dids=("raw:a",)):
    lock = {"name": "survey", "mode": mode, "until": until, "dids": list(dids)}
    document = patched(_namespaced(RETENTION, "steward"), ("metadata", "name"), name)
    return patched(document, ("spec", "locks"), [lock])


def test_a_compliance_lock_can_only_grow(kube):
    name = f"locked-{uuid.uuid4().hex[:8]}"
    kube.apply(_locked(name, "2030-01-01T00:00:00Z"))
    message = "a Compliance lock cannot be removed, shortened or weakened"
    for change in (
        _locked(name, "2029-01-01T00:00:00Z"),
        _locked(name, "2030-01-01T00:00:00Z", mode="Governance"),
        patched(_locked(name, "2030-01-01T00:00:00Z"), ("spec", "locks"), []),
    ):
        with pytest.raises(PermanentError, match=message):
            kube.apply(change, dry_run=True)
    assert kube.apply(_locked(name, "2031-01-01T00:00:00Z"), dry_run=True)["spec"]["locks"]


def test_a_governance_lock_may_be_removed(kube):
    name = f"governed-{uuid.uuid4().hex[:8]}"
    kube.apply(_locked(name, "2030-01-01T00:00:00Z", mode="Governance"))
    removed = patched(_locked(name, "2030-01-01T00:00:00Z"), ("spec", "locks"), [])
    assert "locks" not in kube.apply(removed, dry_run=True)["spec"]
