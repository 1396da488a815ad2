"""The generated CRD schemas accept the repository's files and reject broken ones.

Checked with a real OpenAPI 3.0 validator (openapi-schema-validator), not hand-written checks;
the real API server checks the same CRDs (and their CEL rules) in tests/testing.
"""

from pathlib import Path

import pytest
import yaml
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator

from steward.models import KINDS, kind_info
from steward.models.crd import build_crds, openapi_schema
from support.samples import CAMPAIGN, OODS, RETENTION, RULE, SITE, patched

ROOT = Path(__file__).resolve().parents[2]
REPO_FILES = sorted([*ROOT.glob("policies/**/*.yaml"), *ROOT.glob("sites/*.yaml")])


def _validator(kind: str) -> OAS30Validator:
    return OAS30Validator(openapi_schema(kind_info(kind)))


def _documents():
    for path in REPO_FILES:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield pytest.param(document, id=f"{path.relative_to(ROOT)}:{document['kind']}")


def test_repository_has_policies_and_sites():
    assert any("policies" in str(p) for p in REPO_FILES)
    assert any("sites" in str(p) for p in REPO_FILES)


@pytest.mark.parametrize("document", list(_documents()))
def test_schema_accepts_repository_files(document):
    _validator(document["kind"]).validate(document)


@pytest.mark.parametrize(
    "document", [SITE, RULE, RETENTION, OODS, CAMPAIGN], ids=lambda d: d["kind"]
)
def test_schema_accepts_model_samples(document):
    _validator(document["kind"]).validate(document)


@pytest.mark.parametrize(
    ("document", "path", "value"),
    [
        (RULE, ("spec", "destination"), 42),
        (RULE, ("spec", "copies"), 0),
        (RULE, ("spec", "lifetime"), "7 days"),
        (RULE, ("spec", "selector", "didType"), "BLOB"),
        (RETENTION, ("spec", "action"), "Shred"),
        (OODS, ("spec", "capacity"), "lots"),
        (OODS, ("spec", "highWatermark"), 1.5),
        (CAMPAIGN, ("spec", "steps"), []),
        (CAMPAIGN, ("spec", "priority"), "whenever"),
        (SITE, ("spec", "rses", 0, "type"), "FLOPPY"),
        (SITE, ("spec", "rses", 0, "name"), "ncsa tape"),
        (SITE, ("spec", "facility"), None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_rejects_broken_documents(document, path, value):
    with pytest.raises(ValidationError):
        _validator(document["kind"]).validate(patched(document, path, value))


def test_crds_are_structural():
    """Every node has a type unless it is int-or-string or preserves unknown fields."""

    def walk(node, where):
        if node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            return
        assert node.get("type"), f"{where} has no type"
        assert "$ref" not in node, where
        assert "anyOf" not in node, where
        for name, child in node.get("properties", {}).items():
            walk(child, f"{where}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}[*]")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    for info in KINDS:
        schema = openapi_schema(info)
        walk(schema["properties"]["spec"], f"{info.kind}.spec")


def test_crd_names_columns_and_cel():
    crds = build_crds()
    rr = crds["replicationrule.yaml"]["spec"]
    assert rr["names"]["shortNames"] == ["rr"]
    assert rr["names"]["categories"] == ["steward"]
    version = rr["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == [
        "Destination",
        "Copies",
        "OK",
        "Replicating",
        "Stuck",
        "Backlog",
        "CatchingUp",
        "Ready",
        "Age",
    ]
    wide = {c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")}
    assert wide == {"Backlog", "CatchingUp"}  # kubectl get -o wide
    camp = crds["campaign.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in camp] == ["Phase", "Priority", "Progress", "Site", "Age"]
    selector = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["selector"]
    assert any("has(self.dids)" in r["rule"] for r in selector["x-kubernetes-validations"])
    assert crds["site.yaml"]["spec"]["scope"] == "Cluster"


def test_explain_descriptions_present():
    spec = openapi_schema(kind_info("ReplicationRule"))["properties"]["spec"]
    assert "RSE expression" in spec["properties"]["destination"]["description"]
