"""The Argo CD health checks of docs/gitops/argocd run in Lua on statuses shaped like Steward's.

Argo CD runs health scripts from argocd-cm in gopher-lua (Lua 5.1 semantics) with only the base,
table, package and a reduced os library open (argo-cd util/lua/lua.go: standard libraries stay
closed unless ``useOpenLibs`` is set). The scripts run here in the same kind of sandbox: string,
math, io, os, debug and coroutine removed, strings without methods, a fresh state per run. They
run in PUC Lua 5.1, the language gopher-lua implements (every number a double, as Argo CD's
decoding makes them), and in Lua 5.4, whose integers and floats print differently, so number
formatting that only works by accident fails here.

Every status sample is validated against the kind's pydantic model, keys included, so the
samples cannot drift from what the operator writes.
"""

from __future__ import annotations

import copy
import importlib
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from steward.models import KINDS, kind_info
from steward.models.campaign import CampaignStatus
from steward.models.oods import OODSCacheStatus
from steward.models.replication import ReplicationRuleStatus
from steward.models.retention import RetentionPolicyStatus
from steward.models.site import SiteStatus
from steward.testing.devoperator import reconciled_kinds
from support.samples import CAMPAIGN, OODS, RETENTION, RULE, SITE

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "docs" / "gitops" / "argocd"
HEALTH = ARGOCD / "health"
CUSTOMIZATIONS = ARGOCD / "resource-customizations.yaml"
KIND_NAMES = [info.kind for info in KINDS]
CONFIGMAP_KEY = "resource.customizations.health.steward.lsst.io_{}"

HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
STATUS_MODELS: dict[str, type[BaseModel]] = {
    "Site": SiteStatus,
    "ReplicationRule": ReplicationRuleStatus,
    "RetentionPolicy": RetentionPolicyStatus,
    "OODSCache": OODSCacheStatus,
    "Campaign": CampaignStatus,
}
DOCUMENTS = {
    "Site": SITE,
    "ReplicationRule": RULE,
    "RetentionPolicy": RETENTION,
    "OODSCache": OODS,
    "Campaign": CAMPAIGN,
}
CONDITION_KINDS = KIND_NAMES
"""Kinds whose health comes from the Ready condition: all of them, until an operator writes a
kind's own fields (a Campaign's phase) and its script reads them."""

GENERATION = 3
NOW = "2026-11-30T10:00:00Z"
WAITING = "waiting for the operator to observe generation 3"
TIB = 2**40

SANDBOX = """
debug.setmetatable("", nil)
string, math, io, os, debug, coroutine, utf8, python = nil, nil, nil, nil, nil, nil, nil, nil
"""
"""What Argo CD's Lua state lacks: the libraries it does not open, and string methods."""


# Running the scripts ------------------------------------------------------------------------


def to_lua(lua: Any, value: Any) -> Any:
    """Build the Lua value Argo CD gives a script for this JSON value.

    As in argo-cd's decodeValue: an object becomes a table keyed by strings, an array a table
    indexed from 1 (so ``#`` and ``ipairs`` see every item), null becomes nil (the key is absent
    from the table), numbers, strings and booleans stay what they are.
    """
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    if isinstance(value, bool | int | float | str):
        return value
    msg = f"not a JSON value: {value!r}"
    raise TypeError(msg)


def new_state(lupa: ModuleType) -> Any:
    lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(SANDBOX)
    return lua


def script(kind: str) -> str:
    return (HEALTH / f"{kind}.lua").read_text()


def health(lupa: ModuleType, kind: str, document: dict[str, Any]) -> tuple[str, str]:
    """Run the kind's health check on ``document`` the way Argo CD does; return (status, msg)."""
    lua = new_state(lupa)
    lua.globals().obj = to_lua(lua, document)
    before = set(lua.globals())
    result = lua.execute(script(kind))
    leaked = set(lua.globals()) - before
    assert not leaked, f"{kind}.lua sets globals {leaked}: keep everything local"
    assert lupa.lua_type(result) == "table", f"{kind}.lua must return a table"
    returned = dict(result.items())
    assert set(returned) == {"status", "message"}, returned
    assert returned["status"] in HEALTH_STATUSES, returned
    assert isinstance(returned["message"], str), returned
    assert returned["message"], returned
    return returned["status"], returned["message"]


@pytest.fixture(params=["lupa.lua51", "lupa.lua54"], ids=["lua5.1", "lua5.4"])
def lupa(request) -> ModuleType:
    return importlib.import_module(request.param)


# Status samples -------------------------------------------------------------------------------


def condition(
    type_: str, status: str, reason: str, message: str = "", generation: int = GENERATION
) -> dict[str, Any]:
    """One condition as the operator writes it (steward.services.conditions.condition)."""
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
        "observedGeneration": generation,
    }


def converged(ready_reason: str, ready_message: str, degraded_reason: str) -> list[dict]:
    return [
        condition("Ready", "True", ready_reason, ready_message),
        condition("Progressing", "False", "Converged"),
        condition("Degraded", "False", degraded_reason),
    ]


def healthy_status(kind: str) -> dict[str, Any]:
    """A status of ``kind`` that the health check calls Healthy."""
    if kind == "Site":
        return {
            "observedGeneration": GENERATION,
            "rses": [
                {
                    "name": "NCSA_TAPE",
                    "registered": True,
                    "availabilityRead": True,
                    "availabilityWrite": True,
                    "availabilityDelete": True,
                    "inDowntime": False,
                }
            ],
            "registered": 1,
            "available": 1,
            "conditions": converged(
                "Registered", "1 RSEs registered, 1 fully available", "AllAvailable"
            ),
        }
    if kind == "ReplicationRule":
        return {
            "observedGeneration": GENERATION,
            "ruleIds": ["3f2a9c", "8e1b07", "a4c2d9", "c0ffee", "d15ea5"],
            "selected": 5,
            "counts": {
                "OK": 5,
                "REPLICATING": 0,
                "STUCK": 0,
                "SUSPENDED": 0,
                "WAITING_APPROVAL": 0,
                "INJECT": 0,
            },
            "bytes": 3 * TIB,
            "lastSyncTime": NOW,
            "conditions": converged("AllRulesOK", "5 of 5 DIDs placed", "Healthy"),
        }
    if kind == "RetentionPolicy":
        return {
            "observedGeneration": GENERATION,
            "plan": {
                "computedAt": NOW,
                "candidates": 50,
                "wouldExpire": 42,
                "bytes": 1649267441664,
                "protected": {"LastCustodialReplica": 3, "Hold": 5},
            },
            "lastRunTime": NOW,
            "mode": "Acting",
            "conditions": converged("PlanApplied", "expired 42 DIDs", "Healthy"),
        }
    if kind == "OODSCache":
        return {
            "observedGeneration": GENERATION,
            "files": 1200,
            "bytes": 5 * TIB,
            "oldestItem": "2026-11-23T10:00:00Z",
            "pinned": 12,
            "evictedLastCycle": 3,
            "conditions": converged(
                "WithinWatermarks", "usage below the high watermark", "Healthy"
            ),
        }
    assert kind == "Campaign"
    return {
        "observedGeneration": GENERATION,
        "phase": "Succeeded",
        "invocations": 500,
        "progress": "500/500",
        "steps": [{"name": "isr", "succeeded": 500}, {"name": "calibrate", "succeeded": 500}],
        "failures": {},
        "startTime": "2026-11-29T10:00:00Z",
        "endTime": NOW,
        "conditions": converged("Succeeded", "500 of 500 invocations succeeded", "Healthy"),
    }


HEALTHY_MESSAGES = {
    "Site": "Registered: 1 RSEs registered, 1 fully available",
    "ReplicationRule": "AllRulesOK: 5 of 5 DIDs placed",
    "RetentionPolicy": "PlanApplied: expired 42 DIDs",
    "OODSCache": "WithinWatermarks: usage below the high watermark",
    "Campaign": "Succeeded: 500 of 500 invocations succeeded",
}


def replace_condition(status: dict[str, Any], *new: dict[str, Any]) -> dict[str, Any]:
    """``status`` with the conditions of ``new``'s types replaced."""
    changed = copy.deepcopy(status)
    types = {c["type"] for c in new}
    changed["conditions"] = [c for c in changed["conditions"] if c["type"] not in types]
    changed["conditions"].extend(new)
    return changed


def observed(status: dict[str, Any], generation: int) -> dict[str, Any]:
    """``status`` as computed from an older ``generation`` (every condition too)."""
    changed = copy.deepcopy(status)
    changed["observedGeneration"] = generation
    for item in changed.get("conditions", []):
        item["observedGeneration"] = generation
    return changed


@dataclass
class Case:
    """One object the health check sees, and what it must answer."""

    kind: str
    name: str
    status: dict[str, Any] | None
    expected: str
    message: str
    spec: dict[str, Any] = field(default_factory=dict)
    generation: int | None = GENERATION

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.name}"

    def document(self) -> dict[str, Any]:
        document = copy.deepcopy(DOCUMENTS[self.kind])
        document["spec"].update(copy.deepcopy(self.spec))
        if self.generation is not None:
            document["metadata"] = {**document["metadata"], "generation": self.generation}
        if self.status is not None:
            document["status"] = copy.deepcopy(self.status)
        return document


def common_cases(kind: str) -> list[Case]:
    """The rules every kind follows: generation first, then Degraded, then the kind's own."""
    good = healthy_status(kind)
    rucio_down = condition(
        "Degraded", "True", "RucioUnavailable", "Rucio at https://rucio.lsst.org did not answer"
    )
    invalid = "spec.lifetime: invalid duration '7 days'"
    return [
        Case(kind, "no-status", None, "Progressing", WAITING),
        Case(kind, "empty-status", {}, "Progressing", WAITING),
        Case(
            kind,
            "no-status-no-generation",
            None,
            "Progressing",
            "waiting for the operator to report status",
            generation=None,
        ),
        Case(
            kind,
            "older-generation",
            observed(good, GENERATION - 1),
            "Progressing",
            f"{WAITING} (status is from generation 2)",
        ),
        Case(kind, "healthy", good, "Healthy", HEALTHY_MESSAGES[kind]),
        Case(
            kind, "healthy-no-generation", good, "Healthy", HEALTHY_MESSAGES[kind], generation=None
        ),
        Case(
            kind,
            "rucio-unavailable",
            replace_condition(good, rucio_down),
            "Degraded",
            "RucioUnavailable: Rucio at https://rucio.lsst.org did not answer",
        ),
        Case(
            # The operator writes only conditions for a spec it cannot parse: the rest of the
            # status stays at the last good generation, and must not hide the error.
            kind,
            "invalid-spec-of-new-generation",
            replace_condition(
                observed(good, GENERATION - 1),
                condition("Ready", "False", "InvalidSpec", invalid),
                condition("Degraded", "True", "InvalidSpec", invalid),
            ),
            "Degraded",
            f"InvalidSpec: {invalid}",
        ),
        Case(
            # A Degraded condition of an older generation says nothing about the new spec.
            kind,
            "degraded-older-generation",
            observed(
                replace_condition(good, condition("Degraded", "True", "Refused", "quota")),
                GENERATION - 1,
            ),
            "Progressing",
            f"{WAITING} (status is from generation 2)",
        ),
        Case(
            kind,
            "refused",
            replace_condition(
                good, condition("Degraded", "True", "Refused", "DuplicateRule for raw:a")
            ),
            "Degraded",
            "Refused: DuplicateRule for raw:a",
        ),
    ]


def condition_cases(kind: str) -> list[Case]:
    """Rules of the kinds whose health is the Ready condition."""
    good = healthy_status(kind)
    without = copy.deepcopy(good)
    without["conditions"] = []
    return [
        Case(kind, "no-conditions", without, "Progressing", "waiting for the Ready condition"),
        Case(
            kind,
            "ready-unknown",
            replace_condition(good, condition("Ready", "Unknown", "Starting")),
            "Progressing",
            "Starting",
        ),
    ]


def site_cases() -> list[Case]:
    good = healthy_status("Site")
    downtime = replace_condition(
        good,
        condition("Ready", "True", "Registered", "2 RSEs registered, 1 fully available"),
        condition("Degraded", "True", "ScheduledDowntime", "NCSA_TAPE"),
    )
    downtime["rses"][0].update(
        {"availabilityRead": False, "availabilityWrite": False, "inDowntime": True}
    )
    downtime["rses"].append(
        {
            "name": "NCSA_DISK",
            "registered": True,
            "availabilityRead": True,
            "availabilityWrite": True,
            "availabilityDelete": True,
        }
    )
    downtime |= {"registered": 2, "available": 1}
    pending = replace_condition(
        downtime, condition("Ready", "False", "DistancesPending", "waiting for peers: in2p3")
    )
    return [
        Case(
            "Site",
            "scheduled-downtime",
            downtime,
            "Healthy",
            "Registered: 2 RSEs registered, 1 fully available; "
            "scheduled downtime in force for NCSA_TAPE",
        ),
        Case(
            "Site",
            "downtime-and-distances-pending",
            pending,
            "Progressing",
            "DistancesPending: waiting for peers: in2p3; scheduled downtime in force for NCSA_TAPE",
        ),
        Case(
            "Site",
            "distances-pending",
            replace_condition(
                good, condition("Ready", "False", "DistancesPending", "waiting for peers: base")
            ),
            "Progressing",
            "DistancesPending: waiting for peers: base",
        ),
    ]


def rule_cases() -> list[Case]:
    good = healthy_status("ReplicationRule")
    window = (
        "outside the transfer window 22:00-06:00 America/Santiago; "
        "opens at 2026-11-30T22:00:00-03:00"
    )
    replicating = replace_condition(
        good,
        condition("Ready", "False", "Replicating", "3 of 5 DIDs placed"),
        condition("Progressing", "True", "Replicating", "3 of 5 DIDs placed"),
    )
    replicating["counts"] |= {"OK": 3, "REPLICATING": 2}
    stuck = replace_condition(
        replicating,
        condition("Ready", "False", "RulesStuck", "2 rules STUCK"),
        condition("Progressing", "True", "RulesStuck", "2 rules STUCK"),
        condition("Degraded", "True", "RulesStuck", "2 rules STUCK"),
    )
    stuck["counts"] |= {"REPLICATING": 0, "STUCK": 2}
    return [
        Case(
            "ReplicationRule",
            "replicating",
            replicating,
            "Progressing",
            "Replicating: 3 of 5 DIDs placed",
        ),
        Case("ReplicationRule", "rules-stuck", stuck, "Degraded", "RulesStuck: 2 rules STUCK"),
        Case(
            "ReplicationRule",
            "waiting-for-transfer-window",
            replace_condition(
                good,
                condition("Ready", "False", "WaitingForTransferWindow", window),
                condition("Progressing", "True", "WaitingForTransferWindow", window),
            ),
            "Suspended",
            f"WaitingForTransferWindow: {window}",
        ),
        Case(
            "ReplicationRule",
            "observing",
            replace_condition(
                good,
                condition("Ready", "False", "Observing", "2 selected DIDs have no rule (Observe)"),
            ),
            "Healthy",
            "Observing: 2 selected DIDs have no rule (Observe)",
            spec={"managementPolicy": "Observe"},
        ),
    ]


CASES: list[Case] = [
    *(case for kind in KIND_NAMES for case in common_cases(kind)),
    *(case for kind in CONDITION_KINDS for case in condition_cases(kind)),
    *site_cases(),
    *rule_cases(),
]


# The health rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_health(lupa, case):
    assert health(lupa, case.kind, case.document()) == (case.expected, case.message)


def test_every_kind_has_every_common_rule():
    names = {(c.kind, c.name) for c in CASES}
    for kind in KIND_NAMES:
        for case in common_cases(kind):
            assert (kind, case.name) in names
    assert {c.expected for c in CASES} >= {"Healthy", "Progressing", "Degraded", "Suspended"}


# The samples are the operator's shapes --------------------------------------------------------


def _unknown_keys(sample: Any, dumped: Any, path: str = "status") -> list[str]:
    """Keys of ``sample`` the model dropped: pydantic ignores unknown status fields."""
    if isinstance(sample, dict) and isinstance(dumped, dict):
        problems = [f"{path}.{key}" for key in sample if key not in dumped]
        for key in sample.keys() & dumped.keys():
            problems += _unknown_keys(sample[key], dumped[key], f"{path}.{key}")
        return problems
    if isinstance(sample, list) and isinstance(dumped, list):
        return [
            problem
            for index, (item, out) in enumerate(zip(sample, dumped, strict=True))
            for problem in _unknown_keys(item, out, f"{path}[{index}]")
        ]
    return []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sample_is_a_valid_status(case):
    resource = kind_info(case.kind).model.model_validate(case.document())
    if case.status is None:
        assert resource.status is None
        return
    assert isinstance(resource.status, STATUS_MODELS[case.kind])
    dumped = resource.status.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert _unknown_keys(case.status, dumped) == []


def test_status_models_are_the_kinds_status():
    for kind in KIND_NAMES:
        annotation = kind_info(kind).model.model_fields["status"].annotation
        assert STATUS_MODELS[kind] in getattr(annotation, "__args__", ())


# The harness is as strict as Argo CD ----------------------------------------------------------


def test_tables_have_json_semantics(lupa):
    lua = new_state(lupa)
    status = healthy_status("ReplicationRule") | {"subscription": None}
    lua.globals().obj = to_lua(lua, {"status": status, "spec": {"publish": False}})
    check = lua.eval(
        "function() local c = obj.status.conditions; local n = 0;"
        " for _ in ipairs(c) do n = n + 1 end;"
        " return #c, n, c[1].type, c[0] == nil, obj.status.subscription == nil,"
        " obj.spec.publish == false, obj.status.counts.OK end"
    )
    assert tuple(check()) == (3, 3, "Ready", True, True, True, 5)


def test_sandbox_lacks_what_argo_cd_lacks(lupa):
    lua = new_state(lupa)
    assert lua.eval("string == nil and math == nil and os == nil and io == nil")
    assert lua.eval("type(table.sort) == 'function' and type(table.concat) == 'function'")
    with pytest.raises(lupa.LuaError):
        lua.execute("return ('abc'):len()")


# The artefacts ------------------------------------------------------------------------------


def test_one_script_per_kind():
    assert sorted(p.stem for p in HEALTH.glob("*.lua")) == sorted(KIND_NAMES)
    assert sorted(p.name for p in HEALTH.iterdir()) == sorted(f"{k}.lua" for k in KIND_NAMES)


def _common_block(text: str) -> str:
    start = text.index("-- BEGIN steward-common")
    end = text.index("-- END steward-common")
    return text[start:end]


def test_shared_helpers_are_identical_in_every_script():
    blocks = {kind: _common_block(script(kind)) for kind in KIND_NAMES}
    reference = blocks["ReplicationRule"]
    assert [kind for kind, block in blocks.items() if block != reference] == []


def test_configmap_embeds_the_scripts_byte_for_byte():
    text = CUSTOMIZATIONS.read_text()
    configmap = yaml.safe_load(text)
    assert configmap["apiVersion"] == "v1"
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "argocd-cm"
    assert sorted(configmap["data"]) == sorted(CONFIGMAP_KEY.format(k) for k in KIND_NAMES)
    stale = []
    for kind in KIND_NAMES:
        lua = script(kind)
        block = f"  {CONFIGMAP_KEY.format(kind)}: |\n" + textwrap.indent(lua, "    ")
        if configmap["data"][CONFIGMAP_KEY.format(kind)] != lua or block not in text:
            stale.append(kind)
    assert stale == [], (
        f"{CUSTOMIZATIONS.relative_to(ROOT)} does not embed the current health/<Kind>.lua of "
        f"{stale}: paste each file into its block, indented four spaces"
    )


def test_scripts_end_with_one_newline():
    # A YAML literal block keeps exactly one final newline: a script ending otherwise could
    # never be embedded byte for byte.
    for kind in KIND_NAMES:
        lua = script(kind)
        assert lua.endswith("\n")
        assert not lua.endswith("\n\n")
        assert "\t" not in lua


# The scripts read only what operators write -------------------------------------------------

WRITTEN_BY_EVERY_OPERATOR = {"status.observedGeneration", "status.conditions"}
"""What every Steward operator writes, through steward.services.conditions."""


def _schema_of(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and ``anyOf: [X, null]`` to the schema that describes values."""
    while True:
        if "$ref" in schema:
            schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in schema:
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        else:
            return schema


def _traced(lua: Any, value: Any, schema: dict[str, Any], root: dict, path: str) -> Any:
    """``value`` as a Lua table that reports every key read from an object of the model.

    Objects of the model (schemas with properties) become proxies: an empty table whose
    ``__index`` records ``path.key`` and returns the value. Lists and free-form maps stay
    plain tables, so ``ipairs`` and ``pairs`` see them as Argo CD gives them.
    """
    schema = _schema_of(schema, root)
    if not isinstance(value, dict) or "properties" not in schema:
        return to_lua(lua, value)
    inner = lua.table()
    for key, item in value.items():
        if item is not None:
            child = schema["properties"].get(key, {})
            inner[key] = _traced(lua, item, child, root, f"{path}.{key}")
    return lua.globals().steward_trace(inner, path)


TRACER = """
function steward_trace(inner, path)
  local proxy = {}
  setmetatable(proxy, {__index = function(_, key)
    steward_record(path .. "." .. tostring(key))
    return inner[key]
  end})
  return proxy
end
"""


def _paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "status") -> set[str]:
    """Every field path the model declares, aliases as in JSON."""
    schema = _schema_of(schema, root)
    paths = {prefix}
    for key, child in schema.get("properties", {}).items():
        paths |= _paths(child, root, f"{prefix}.{key}")
    return paths


def status_reads(lupa: ModuleType, kind: str) -> set[str]:
    """The status fields the kind's script reads, over every case of the kind."""
    model = STATUS_MODELS[kind]
    root = model.model_json_schema(by_alias=True)
    reads: set[str] = set()
    for case in CASES:
        if case.kind != kind or case.status is None:
            continue
        lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
        lua.execute(TRACER)
        lua.globals().steward_record = reads.add
        lua.execute(SANDBOX)
        document = case.document()
        status = document.pop("status")
        obj = to_lua(lua, document)
        obj["status"] = _traced(lua, status, root, root, "status")
        lua.globals().obj = obj
        lua.execute(script(kind))
    return reads


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_scripts_read_only_fields_the_model_declares(lupa, kind):
    model = STATUS_MODELS[kind]
    root = model.model_json_schema(by_alias=True)
    reads = status_reads(lupa, kind)
    assert reads, f"{kind}.lua read nothing from status: the tracing is broken"
    assert reads - _paths(root, root) == set(), (
        f"{kind}.lua reads status fields its model does not declare"
    )


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_scripts_read_only_what_an_operator_writes(lupa, kind):
    """A kind no operator reconciles has no status of its own: its script may read only what
    every operator writes. Once a handler for the kind exists (another branch adding the
    RetentionPolicy, OODSCache or Campaign operator), its own fields are allowed too."""
    reads = status_reads(lupa, kind)
    if kind in reconciled_kinds():
        return
    assert reads <= WRITTEN_BY_EVERY_OPERATOR, (
        f"{kind}.lua reads {sorted(reads - WRITTEN_BY_EVERY_OPERATOR)}, which no operator "
        f"writes: no handler reconciles {kind} yet"
    )


def test_tracing_sees_a_kind_specific_read(lupa):
    """The check above can fail: a script reading status.mode is seen doing so."""
    lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(TRACER)
    reads: set[str] = set()
    lua.globals().steward_record = reads.add
    root = STATUS_MODELS["RetentionPolicy"].model_json_schema(by_alias=True)
    lua.globals().obj = lua.table_from(
        {"status": _traced(lua, {"mode": "DryRun", "plan": {"bytes": 1}}, root, root, "status")}
    )
    lua.execute("local x = obj.status.mode; local y = obj.status.plan.bytes")
    assert reads == {"status.mode", "status.plan", "status.plan.bytes"}
