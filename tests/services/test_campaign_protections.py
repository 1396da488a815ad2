"""Campaign protections from real Campaign objects of the API server, judged against Rucio.

Campaigns are created in the test's namespace and their status written through the status
subresource, as the campaign operator would; the deletion gate reads them back the way the
operator's index does (`CampaignObjects`), and a RetentionPolicy acts on real Rucio rules.
"""

import secrets
from datetime import UTC, datetime, timedelta

import kubernetes
import pytest

from steward.constants import GROUP, VERSION
from steward.models.campaign import Campaign
from steward.models.retention import RetentionPolicy
from steward.schema.ledger import LedgerCampaign, LedgerFile
from steward.services.audit import AuditService, ResourceRef
from steward.services.deletion import DeletionGate
from steward.services.ledger import LedgerService
from steward.services.protections import CampaignObjects, ClusterFacts
from steward.services.retention import RetentionService
from steward.storage.database import make_engine, make_sessionmaker, upgrade
from steward.storage.rucio import RuleSpec

pytestmark = [pytest.mark.kube, pytest.mark.rucio]


@pytest.fixture
def service(rucio_storage, database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    audit = AuditService(make_sessionmaker(engine))
    later = datetime.now(UTC) + timedelta(days=22)
    gate = DeletionGate(rucio_storage, audit, clock=lambda: later)
    yield RetentionService(rucio_storage, audit, gate, clock=lambda: later)
    engine.dispose()


def _campaign(namespace, name, *, inputs, outputs_scope):
    return {
        "apiVersion": "steward.lsst.io/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "site": "ncsa",
            "image": "lsstsqre/centos:w_2026_47",
            "steps": [{"name": "isr", "pipeline": "DRP.yaml#isr"}],
            "coverage": {"query": {"dids": inputs}},
            "outputs": {"scope": outputs_scope},
        },
    }


def _create(kube_api, namespace, body, phase):
    api = kubernetes.client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "campaigns", body)
    if phase is not None:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "campaigns",
            body["metadata"]["name"],
            {"status": {"phase": phase}},
        )


def _campaigns(kube_api, namespace):
    api = kubernetes.client.CustomObjectsApi(kube_api)
    items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "campaigns")["items"]
    return [Campaign.model_validate(item) for item in items]


def _policy(namespace, dids, **spec):
    return RetentionPolicy.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": f"p-{secrets.token_hex(3)}", "namespace": namespace},
            "spec": {"selector": {"dids": dids}, "lifetime": "21d", **spec},
        }
    )


def _ref(policy):
    return ResourceRef(kind="RetentionPolicy", namespace="ns", name=policy.metadata.name)


def _expired(rucio_storage, rule_id):
    return rucio_storage.get_rule(rule_id).expires_at is not None


def test_inputs_of_unfinished_campaigns_are_leased(
    service, rucio_storage, rucio_data, kube_api, namespace
):
    running, pending, done, free = (rucio_data.dataset() for _ in range(4))
    rules = {
        d: rucio_storage.add_rule(d, RuleSpec("NCSA_DISK")) for d in (running, pending, done, free)
    }
    out = f"o{secrets.token_hex(6)}"
    _create(
        kube_api,
        namespace,
        _campaign(namespace, "drp", inputs=[running], outputs_scope=out),
        "Running",
    )
    _create(
        kube_api,
        namespace,
        _campaign(namespace, "queued", inputs=[pending], outputs_scope=out),
        None,
    )
    _create(
        kube_api,
        namespace,
        _campaign(namespace, "old", inputs=[done], outputs_scope=out),
        "Succeeded",
    )
    facts = ClusterFacts(campaigns=_campaigns(kube_api, namespace))
    policy = _policy(namespace, [running, pending, done, free])
    shown = service.reconcile(policy, _ref(policy), facts)
    assert shown.status["removed"] == 0  # a new policy's plan is shown first
    outcome = service.reconcile(policy, _ref(policy), facts, shown.status)
    assert outcome.status["plan"]["protected"] == {"CampaignInput": 2}
    assert not _expired(rucio_storage, rules[running])
    assert not _expired(rucio_storage, rules[pending])
    assert _expired(rucio_storage, rules[done])
    assert _expired(rucio_storage, rules[free])


def test_outputs_of_a_failed_campaign_wait_for_its_review(
    service, rucio_storage, rucio_data, kube_api, namespace
):
    outputs = f"o{secrets.token_hex(6)}"
    rucio_storage.add_scope(outputs)
    member = rucio_data.dataset()
    output = f"{outputs}:calexp-1"
    rucio_storage.add_dataset(output)
    rucio_storage.attach(output, rucio_data.files_of(member))
    rule = rucio_storage.add_rule(output, RuleSpec("NCSA_DISK"))
    _create(
        kube_api,
        namespace,
        _campaign(namespace, "pilot", inputs=[member], outputs_scope=outputs),
        "Failed",
    )
    campaigns = _campaigns(kube_api, namespace)
    assert CampaignObjects(campaigns).outputs_awaiting_review([output]) == {output: "pilot"}
    cleanup = _policy(namespace, [output])
    waiting = service.reconcile(cleanup, _ref(cleanup), ClusterFacts(campaigns=campaigns))
    assert waiting.status["plan"]["protected"] == {"FailedCampaignReview": 1}
    assert not _expired(rucio_storage, rule)
    review = _policy(
        namespace,
        [output],
        dataClass="FailedCampaignOutputs",
        campaign="pilot",
        reviewDone=True,
    )
    facts = ClusterFacts(campaigns=campaigns, policies=[review])
    done = service.reconcile(cleanup, _ref(cleanup), facts, waiting.status)
    assert done.status["removed"] == 1
    assert _expired(rucio_storage, rule)


def _ledger_campaign(session, *, name, outcome=None, staging_released=False):
    uid = f"uid-{secrets.token_hex(6)}"
    session.add(
        LedgerCampaign(
            uid=uid,
            namespace="ns",
            name=name,
            site="ncsa",
            output_scope="out",
            invocations=1,
            steps="[]",
            shard_size=1,
            created_at=datetime.now(UTC),
            outcome=outcome,
            staging_released=staging_released,
        )
    )
    return uid


def _reads(session, uid, did, step="two"):
    session.add(LedgerFile(did=did, campaign_uid=uid, step=step, index=0, role="input"))


def test_what_the_ledger_recorded_a_campaign_reading_is_leased(
    service, rucio_storage, rucio_data, database_url
):
    """Inputs no Campaign object names (an earlier step's output) are kept while recorded.

    The ledger says campaign ``drp``'s second step reads ``between`` (written by its first
    step): no coverage query names it, so only the ledger protects it. A campaign closed
    out, or one whose staging was released after it Succeeded, reads nothing any more, and a
    campaign releasing its own staging (``ended``) is not its own reader.
    """
    between, released, closed, own, free = (rucio_data.dataset() for _ in range(5))
    rules = {
        d: rucio_storage.add_rule(d, RuleSpec("NCSA_DISK"))
        for d in (between, released, closed, own, free)
    }
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        drp = _ledger_campaign(session, name="drp")
        _reads(session, drp, between)
        _reads(session, _ledger_campaign(session, name="old", staging_released=True), released)
        _reads(session, _ledger_campaign(session, name="done", outcome="ClosedOut"), closed)
        me = _ledger_campaign(session, name="me")
        _reads(session, me, own)
    ledger = LedgerService(sessions)
    facts = ClusterFacts(ledger=ledger, ended=frozenset({me}))
    assert CampaignObjects([], recorded=ledger, ended={me}).inputs_in_use(
        [between, released, closed, own, free]
    ) == {between: "ns/drp"}
    policy = _policy("ns", [between, released, closed, own, free])
    shown = service.reconcile(policy, _ref(policy), facts)
    outcome = service.reconcile(policy, _ref(policy), facts, shown.status)
    assert outcome.status["plan"]["protected"] == {"CampaignInput": 1}
    assert not _expired(rucio_storage, rules[between])
    assert all(_expired(rucio_storage, rules[d]) for d in (released, closed, own, free))
    # Without the ledger nothing names ``between``: the objects alone would have let it go.
    assert CampaignObjects([]).inputs_in_use([between]) == {}
    with sessions.begin() as session:
        session.get(LedgerCampaign, drp).outcome = "ClosedOut"
    again = service.reconcile(policy, _ref(policy), facts, outcome.status)
    assert again.status["removed"] == 1
    assert _expired(rucio_storage, rules[between])
    engine.dispose()
