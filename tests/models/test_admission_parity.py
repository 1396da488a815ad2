"""``steward validate`` and the real API server give one verdict on one document.

A corpus of documents, each a valid sample of one kind with one value written as YAML text, goes
through both: ``steward validate`` (the file, with the repository's sites/) and the real
kube-apiserver's admission (server-side dry-run apply of what Steward's loader read from that
file, through KubeResources, as ``steward apply`` sends it), with the generated CRDs installed.
Both must accept it or both must refuse it: validate is never more lenient than the API server
(``copies: "2"`` or ``copies: yes``), and never stricter on what it admits (``copies: 2.0``, an
unquoted ``22:00``). The corpus is about types, formats and metadata, which both judge; checks
only validate can make (an RSE expression that matches no RSE, a time zone name) are tested in
tests/cli/test_validate.py.
"""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import kubernetes
import pytest
import yaml

from steward.exceptions import PermanentError
from steward.services.validation import validate_paths
from steward.storage.kubernetes import KubeResources, api_client
from steward.storage.yamlfile import load_documents
from support.samples import CAMPAIGN, OODS, RETENTION, RULE, SITE

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 1, tzinfo=UTC)
RAW = "__raw_yaml__"
BASES = {
    "ReplicationRule": RULE,
    "RetentionPolicy": RETENTION,
    "OODSCache": OODS,
    "Campaign": CAMPAIGN,
    "Site": SITE,
}

CORPUS = [
    # (kind, path, the value as written in YAML, both accept it)
    ("ReplicationRule", None, None, True),
    ("ReplicationRule", ("spec", "copies"), "'2'", False),
    ("ReplicationRule", ("spec", "copies"), "yes", False),
    ("ReplicationRule", ("spec", "copies"), "1.0", True),
    ("ReplicationRule", ("spec", "copies"), "99999999999999999999", False),
    ("ReplicationRule", ("spec", "priority"), "9223372036854775808", False),
    ("ReplicationRule", ("spec", "locked"), "'true'", False),
    ("ReplicationRule", ("spec", "locked"), "1", False),
    ("ReplicationRule", ("spec", "locked"), "on", True),
    ("ReplicationRule", ("spec", "lifetime"), "0s", False),
    ("ReplicationRule", ("spec", "lifetime"), "00d0h", False),
    ("ReplicationRule", ("spec", "lifetime"), "7 days", False),
    ("ReplicationRule", ("spec", "notBefore"), "2026-02-30T00:00:00Z", False),
    ("ReplicationRule", ("spec", "notBefore"), "'2026-12-01T00:00:00'", False),
    ("ReplicationRule", ("spec", "notBefore"), "2026-11-01", False),
    ("ReplicationRule", ("spec", "notBefore"), "1700000000", False),
    ("ReplicationRule", ("spec", "notBefore"), "2026-11-15T08:00:00+01:00", True),
    ("ReplicationRule", ("spec", "transferWindow", "start"), "22:00", True),
    ("ReplicationRule", ("spec", "destination"), "null", False),
    ("ReplicationRule", ("spec", "destination"), "[NCSA_TAPE]", False),
    ("ReplicationRule", ("spec", "selector", "match"), "{archive: no}", False),
    ("ReplicationRule", ("spec", "selector", "match"), "{archive: 'no'}", True),
    ("ReplicationRule", ("spec", "selector", "scope"), "0x1F", False),
    ("ReplicationRule", ("spec", "selector"), "{scope: raw, name: LSSTCam-20261122-*}", True),
    ("ReplicationRule", ("spec", "selector"), "{scope: raw, name: 'raw-*', match: {a: b}}", True),
    ("ReplicationRule", ("spec", "selector"), "{scope: raw, name: '*'}", True),
    ("ReplicationRule", ("spec", "selector"), "{name: 'raw-*'}", False),
    ("ReplicationRule", ("spec", "selector"), "{scope: raw}", False),
    ("ReplicationRule", ("spec", "selector"), "{dids: ['raw:a'], name: 'raw-*'}", False),
    ("ReplicationRule", ("spec", "selector"), "{scope: raw, match: {name: a}}", False),
    ("ReplicationRule", ("spec", "selector", "name"), "raw *", False),
    ("ReplicationRule", ("spec", "selector", "name"), "_raw*", False),
    ("ReplicationRule", ("spec", "selector", "name"), "raw%", False),
    ("ReplicationRule", ("spec", "selector", "name"), "''", False),
    ("ReplicationRule", ("spec", "selector", "name"), "12", False),
    ("RetentionPolicy", ("spec", "selector"), "{scope: user.kcarter, name: w46-*}", True),
    ("RetentionPolicy", ("spec", "selector", "name"), "w46-*", True),
    ("ReplicationRule", ("spec", "destinaton"), "NCSA_TAPE", False),
    ("ReplicationRule", ("metadata", "namepsace"), "steward", False),
    ("ReplicationRule", ("spec", "catchUp"), "{after: 2h, backlog: 10, transfers: 50}", True),
    ("ReplicationRule", ("spec", "catchUp"), "{after: 2h, priority: 5, factor: 1.5}", True),
    ("ReplicationRule", ("spec", "catchUp"), "{after: 2h, priority: 2}", False),
    ("ReplicationRule", ("spec", "catchUp"), "{after: 2h, factor: 2.5}", False),
    ("ReplicationRule", ("spec", "catchUp"), "{after: 2h, factor: 1}", False),
    ("ReplicationRule", ("spec", "catchUp"), "{after: 2h, transfers: '5'}", False),
    ("ReplicationRule", ("spec", "catchUp"), "{backlog: 3}", False),
    (
        "ReplicationRule",
        ("spec", "destination"),
        "NCSA_TAPE\n  catchUp: {after: 1h, transfers: 5}",
        False,
    ),
    ("ReplicationRule", ("metadata", "labels"), "{'bad key': x}", False),
    ("ReplicationRule", ("metadata", "labels"), "{team: data ops}", False),
    ("ReplicationRule", ("metadata", "labels"), "{app.kubernetes.io/name: steward}", True),
    ("ReplicationRule", ("metadata", "annotations"), "{Steward.lsst.io/Note: x}", True),
    ("ReplicationRule", ("metadata", "annotations"), "{'a/b/c': x}", False),
    ("RetentionPolicy", None, None, True),
    ("RetentionPolicy", ("spec", "dryRun"), "'yes'", False),
    ("RetentionPolicy", ("spec", "dryRun"), "yes", True),
    ("RetentionPolicy", ("spec", "maxAge"), "30d", False),
    ("OODSCache", None, None, True),
    ("OODSCache", ("spec", "highWatermark"), "'0.9'", False),
    ("OODSCache", ("spec", "highWatermark"), ".nan", False),
    ("OODSCache", ("spec", "highWatermark"), "1", False),  # the floor (0.97) must be above
    ("OODSCache", ("spec", "highWatermark"), "0.95", True),
    ("OODSCache", ("spec", "lowWatermark"), "0.95", False),
    ("OODSCache", ("spec", "export"), "{root: /data, readOnly: 1}", False),
    ("OODSCache", ("spec", "export"), "{root: /data, readOnly: true}", True),
    ("Campaign", None, None, True),
    ("Campaign", ("spec", "steps", 0, "parallelism"), "'10'", False),
    ("Campaign", ("spec", "coverage", "dataIds"), "[{visit: 1.5}]", False),
    ("Campaign", ("spec", "coverage", "dataIds"), "[{visit: '12'}]", True),
    ("Campaign", ("spec", "coverage", "dataIds"), "[{visit: true}]", False),
    ("Site", None, None, True),
    ("Site", ("spec", "rses", 0, "protocols", 0, "port"), "'8443'", False),
    ("Site", ("spec", "transferLimits"), "[{maxTransfers: 9223372036854775808}]", False),
    ("Site", ("spec", "transferLimits"), "[{maxTransfers: 9223372036854775807}]", True),
    ("Site", ("spec", "rses", 0, "limits"), "{MinFreeSpace: 1e300}", False),
    ("Site", ("spec", "rses", 0, "quota"), "500 TiB", True),
    ("Site", ("spec", "downtimes", 0, "start"), "2026-12-01 08:00:00Z", False),
]


def _document_text(kind, path, raw, namespace, name):
    document = json.loads(json.dumps(BASES[kind]))
    document["metadata"]["name"] = name
    if kind != "Site":
        document["metadata"]["namespace"] = namespace
    if path is not None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = RAW
    return yaml.safe_dump(document, sort_keys=False).replace(RAW, raw or "")


@pytest.fixture(scope="module")
def parity_namespace(control_plane, kube_api):
    core = kubernetes.client.CoreV1Api(kube_api)
    name = f"parity-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def kube(control_plane, crd_errors):
    assert crd_errors == {}
    return KubeResources(api_client(control_plane.kubeconfig))


def test_the_corpus_covers_every_kind():
    assert {kind for kind, *_ in CORPUS} == set(BASES)
    assert sum(accepted for *_, accepted in CORPUS) < len(CORPUS) / 2


@pytest.mark.parametrize(
    ("kind", "path", "raw", "accepted"),
    CORPUS,
    ids=[f"{k}-{'.'.join(map(str, p)) if p else 'valid'}={r}" for k, p, r, _ in CORPUS],
)
def test_validate_and_the_api_server_agree(
    kube, parity_namespace, tmp_path, kind, path, raw, accepted
):
    name = f"parity-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "document.yaml"
    file.write_text(_document_text(kind, path, raw, parity_namespace, name))
    result = validate_paths([file], ROOT / "sites", now=NOW)
    (document,) = load_documents(file)
    try:
        kube.apply(document.data, dry_run=True)
        admitted, refusal = True, ""
    except PermanentError as error:
        admitted, refusal = False, str(error)
    problems = [p.format() for p in result.problems]
    assert (result.ok, admitted) == (accepted, accepted), (problems, refusal)
