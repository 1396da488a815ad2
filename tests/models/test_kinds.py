import json
from datetime import timedelta

import pytest
import yaml
from pydantic import ValidationError

from steward.models import KINDS, kind_info
from steward.models.campaign import Campaign, step_cycle
from steward.models.replication import DeletionPolicy, ReplicationRule
from steward.models.retention import RetentionPolicy
from steward.models.site import Site
from support.samples import CAMPAIGN, DELETE, OODS, RETENTION, RULE, SITE, patched

VALID = [SITE, RULE, RETENTION, OODS, CAMPAIGN]
LOCK = {"name": "survey", "mode": "Compliance", "until": "2030-01-01T00:00:00Z", "dids": ["a:b"]}
APPROVAL = {"approvedBy": "ops", "reason": "checked", "approvedAt": "2026-11-22T00:00:00Z"}


@pytest.mark.parametrize("document", VALID, ids=lambda d: d["kind"])
def test_round_trip_through_yaml_and_json(document):
    model = kind_info(document["kind"]).model
    parsed = model.model_validate(document)
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert model.model_validate(yaml.safe_load(yaml.safe_dump(dumped))) == parsed
    assert model.model_validate_json(json.dumps(dumped)) == parsed


def test_defaults():
    rule = ReplicationRule.model_validate(RULE)
    assert rule.spec.priority == 3
    assert rule.spec.activity == "Data Consolidation"
    assert rule.spec.deletion_policy is None
    assert rule.spec.lifetime == timedelta(days=30)
    campaign = Campaign.model_validate(CAMPAIGN)
    assert campaign.spec.desired_state == "Running"
    assert campaign.spec.inputs.lifetime == timedelta(days=30)
    site = Site.model_validate(SITE)
    rse = site.spec.rses[0]
    assert rse.effective_attributes("NCSA") == {
        "site": "NCSA",
        "type": "TAPE",
        "custodial": True,
        "tier": 1,
    }
    assert rse.quota == 500 * 2**40
    assert DeletionPolicy("Orphan") is DeletionPolicy.ORPHAN


REJECTIONS = [
    (RULE, ("spec", "destinaton"), "x", "Extra inputs"),
    (RULE, ("spec", "destination"), "site=IN2P3&&type=TAPE", "invalid RSE expression"),
    (RULE, ("spec", "lifetime"), "7 days", "invalid duration"),
    (RULE, ("spec", "copies"), 0, "greater than or equal to 1"),
    (RULE, ("spec", "priority"), 9, "less than or equal to 5"),
    (RULE, ("spec", "selector", "dids"), ["raw:a"], "cannot be combined with 'match'"),
    (RULE, ("spec", "selector", "name"), "raw *", "is not a Rucio name pattern"),
    (RULE, ("spec", "selector", "scope"), DELETE, "needs the 'scope'"),
    (RULE, ("spec", "publish"), True, "needs 'publishTo'"),
    (RULE, ("spec", "transferWindow", "start"), 1320, "base-60"),
    (RULE, ("spec", "transferWindow", "end"), "25:00", "not a time of day"),
    (RULE, ("spec", "transferWindow", "timezone"), "Mars/Olympus", "is unknown; use an IANA"),
    (RULE, ("spec", "notBefore"), "2026-12-01T00:00:00", "needs a time zone"),
    (RULE, ("metadata", "name"), "Raw-To-IN2P3", "should match pattern"),
    (RETENTION, ("spec", "maxAge"), "30d", "exactly one of 'lifetime' or 'maxAge'"),
    (RETENTION, ("spec", "owner"), DELETE, "needs 'owner'"),
    (RETENTION, ("spec", "campaign"), "drp", "applies to 'dataClass: FailedCampaignOutputs'"),
    (OODS, ("spec", "lowWatermark"), 0.95, "must be below highWatermark"),
    (OODS, ("spec", "floorWatermark"), 0.85, "must be above highWatermark"),
    (OODS, ("spec", "capacity"), "lots", "invalid size"),
    (RETENTION, ("spec", "locks"), [LOCK, LOCK], "used twice"),
    (RETENTION, ("spec", "locks"), [LOCK | {"until": "2030-01-01T00:00:00"}], "time zone"),
    (RETENTION, ("spec", "locks"), [LOCK | {"mode": "Forever"}], "Input should be"),
    (RETENTION, ("spec", "approval"), APPROVAL | {"planHash": "xyz"}, "should match pattern"),
    (RETENTION, ("spec", "approval"), APPROVAL | {"bypass": ["LegalHold"]}, "Input should be"),
    (RETENTION, ("spec", "maxDeleteFraction"), 1.5, "less than or equal to 1"),
    (OODS, ("spec", "export"), {"root": "/data", "readOnly": False}, "Input should be True"),
    (CAMPAIGN, ("spec", "steps", 0, "dependsOn"), ["coadd"], "cycle"),
    (CAMPAIGN, ("spec", "steps", 1, "dependsOn"), ["isr2"], "which does not exist"),
    (CAMPAIGN, ("spec", "steps", 1, "name"), "isr", "used twice"),
    (CAMPAIGN, ("spec", "priority"), "whenever", "Input should be"),
    (CAMPAIGN, ("spec", "coverage", "dataIds"), [], "needs at least one invocation"),
    (CAMPAIGN, ("spec", "steps", 0, "neverRetryExitCodes"), [0], "greater than or equal to 1"),
    (CAMPAIGN, ("spec", "steps", 0, "neverRetryExitCodes"), [256], "less than or equal to 255"),
    (CAMPAIGN, ("spec", "steps", 0, "memoryMultiplier"), 0.5, "greater than or equal to 1"),
    (CAMPAIGN, ("spec", "steps", 0, "memoryLimit"), "1Gi", "is below resources.memory 4Gi"),
    (CAMPAIGN, ("spec", "steps", 0, "resources"), {"memory": "4 GB"}, "should match pattern"),
    (CAMPAIGN, ("spec", "shardSize"), 20000, "less than or equal to 10000"),
    (CAMPAIGN, ("spec", "coverage", "dataIds"), [{"v": 1}] * 10001, "at most 10000 items"),
    (
        CAMPAIGN,
        ("spec", "controls"),
        {"retry": [{"step": "isr2", "id": "a"}]},
        "retry names step 'isr2', which does not exist",
    ),
    (
        CAMPAIGN,
        ("spec", "controls"),
        {"rescue": [{"step": "isr", "id": "a"}, {"step": "isr", "id": "a"}]},
        "rescue id 'a' is used twice",
    ),
    (
        CAMPAIGN,
        ("spec", "controls"),
        {"accept": [{"step": "coadd", "maxFailures": 1}]},
        "Field required",
    ),
    (CAMPAIGN, ("spec", "controls"), {"approve": ["nope"]}, "approve names step 'nope'"),
    (CAMPAIGN, ("spec", "outputs", "rse"), "ncsa disk", "should match pattern"),
    (SITE, ("spec", "rses", 0, "name"), "ncsa tape", "should match pattern"),
    (SITE, ("spec", "rses", 0, "type"), "FLOPPY", "Input should be"),
    (SITE, ("spec", "downtimes", 0, "end"), "2026-11-30T00:00:00Z", "before it starts"),
    (SITE, ("spec", "downtimes", 0, "start"), "2026-12-01T08:00:00", "needs a time zone"),
    (SITE, ("spec", "rses"), [], "at least 1 item"),
]


@pytest.mark.parametrize(
    ("document", "path", "value", "message"),
    REJECTIONS,
    ids=[f"{d['kind']}-{'.'.join(map(str, p))}" for d, p, _, _ in REJECTIONS],
)
def test_rejections(document, path, value, message):
    model = kind_info(document["kind"]).model
    with pytest.raises(ValidationError, match=message):
        model.model_validate(patched(document, path, value))


def test_step_cycle_names_the_cycle():
    campaign = Campaign.model_validate(CAMPAIGN)
    steps = campaign.spec.steps
    assert step_cycle(steps) == []
    steps[0].depends_on = ["coadd"]
    assert step_cycle(steps) == ["isr", "coadd", "calibrate", "isr"]


def test_every_kind_has_documented_fields():
    for info in KINDS:
        schema = info.model.model_json_schema(by_alias=True)
        defs = schema.get("$defs", {})
        for name, definition in [*defs.items(), (info.kind, schema)]:
            for field, prop in definition.get("properties", {}).items():
                referenced = defs.get(prop.get("$ref", "").rsplit("/", 1)[-1], {})
                described = prop.get("description") or referenced.get("description")
                assert described, f"{name}.{field} has no docstring"


def test_retention_policy_is_importable_by_kind():
    assert kind_info("RetentionPolicy").model is RetentionPolicy
    with pytest.raises(KeyError):
        kind_info("Pod")
