"""Pure decisions of the campaign operator."""

import json
import re

import pytest
from pydantic import ValidationError

from steward.models.campaign import (
    Campaign,
    Step,
    StepPhase,
    format_indexes,
    format_memory,
    index_at,
    output_placeholders,
    parse_indexes,
    parse_memory,
)
from steward.services.campaign.plan import (
    CONFIG_MAP_BUDGET,
    Invocation,
    blocked,
    config_map_entry,
    data_id_hash,
    effective_shard_size,
    group_rescues,
    job_name,
    next_memory,
    retry_decision,
    shard_ranges,
    sort_outputs,
    step_phase,
    topological,
)
from support.samples import CAMPAIGN

GI = 2**30


@pytest.mark.parametrize(
    ("indexes", "text"),
    [([], ""), ([0], "0"), ([0, 1, 2], "0-2"), ([5, 1, 2, 3, 9, 10], "1-3,5,9-10"), ([7, 7], "7")],
)
def test_indexes_round_trip(indexes, text):
    assert format_indexes(indexes) == text
    assert parse_indexes(text) == sorted(set(indexes))


def test_parse_indexes_refuses_a_backward_range():
    with pytest.raises(ValueError, match="end is before the start"):
        parse_indexes("5-3")


@pytest.mark.parametrize(
    ("quantity", "size"),
    [("4Gi", 4 * GI), ("500M", 500 * 10**6), ("1.5Gi", 3 * GI // 2), ("1024", 1024)],
)
def test_memory_quantities(quantity, size):
    assert parse_memory(quantity) == size


def test_memory_formats_as_the_shortest_exact_quantity():
    assert format_memory(8 * GI) == "8Gi"
    assert format_memory(1536 * 2**20) == "1536Mi"
    assert format_memory(1000) == "1000"
    with pytest.raises(ValueError, match="4Gi or 500M"):
        parse_memory("4 gigs")


def test_shards_cover_every_invocation_once():
    ranges = shard_ranges(50, 20)
    assert ranges == [range(20), range(20, 40), range(40, 50)]
    assert shard_ranges(0, 20) == []


def test_shard_size_keeps_the_configmap_under_its_limit():
    small = [Invocation(i, {"visit": i}) for i in range(10)]
    assert effective_shard_size(5000, small) == 5000
    big = [Invocation(i, {"dataId": "x" * 500}) for i in range(10)]
    size = effective_shard_size(5000, big)
    assert size < 5000
    data = {str(k): config_map_entry(big[0]) for k in range(size)}
    assert len(json.dumps(data, separators=(",", ":"))) <= CONFIG_MAP_BUDGET


def test_data_id_hash_is_independent_of_key_order():
    assert data_id_hash({"a": 1, "b": 2}) == data_id_hash({"b": 2, "a": 1})
    assert len(data_id_hash({"a": 1})) == 16


def test_job_names_fit_in_a_label():
    assert job_name("dr1", "step1", "0") == "dr1-step1-0"
    long = job_name("a" * 63, "b" * 63, "r12")
    assert len(long) <= 52
    assert long.endswith("-r12")
    assert long != job_name("a" * 63, "c" * 63, "r12")


def test_memory_is_raised_up_to_the_limit():
    assert next_memory(4 * GI, 2.0, 16 * GI) == 8 * GI
    assert next_memory(8 * GI, 3.0, 16 * GI) == 16 * GI
    assert next_memory(16 * GI, 2.0, 16 * GI) is None
    # A multiplier of one still moves up, so an OOM loop cannot stay at one size.
    assert next_memory(4 * GI, 1.0, 16 * GI) == 4 * GI + 2**20


def step(**kwargs):
    return Step.model_validate({"name": "s", "pipeline": "p", **kwargs})


def test_retry_decisions():
    s = step(retries=2, neverRetryExitCodes=[42], resources={"memory": "1Gi"}, memoryLimit="2Gi")
    oom = retry_decision(s, last_class="OOMKilled", exit_code=137, failures=0, memory=GI)
    assert (oom.rerun, oom.memory) == (True, 2 * GI)
    capped = retry_decision(s, last_class="OOMKilled", exit_code=137, failures=0, memory=2 * GI)
    assert not capped.rerun
    assert "memory limit" in capped.reason
    assert retry_decision(s, last_class="Evicted", exit_code=143, failures=2, memory=GI).rerun
    never = retry_decision(s, last_class="ExitCode", exit_code=42, failures=1, memory=GI)
    assert not never.rerun
    assert "never-retry" in never.reason
    # A SIGKILL the Job stopped at once (exit 137) is retried within the budget...
    assert retry_decision(s, last_class="ExitCode", exit_code=137, failures=1, memory=GI).rerun
    # ... and not beyond it.
    spent = retry_decision(s, last_class="ExitCode", exit_code=1, failures=3, memory=GI)
    assert not spent.rerun


def test_memory_limit_defaults_to_four_times_the_request():
    assert step(resources={"memory": "2Gi"}).memory_limit_bytes() == 8 * GI


def test_memory_limit_below_the_request_is_refused():
    with pytest.raises(ValueError, match="memoryLimit 1Gi is below"):
        step(resources={"memory": "2Gi"}, memoryLimit="1Gi")


def test_step_phases():
    assert step_phase(10, {}, started=False, gate=None, paused=False) is StepPhase.WAITING
    assert (
        step_phase(10, {}, started=False, gate=StepPhase.STAGING, paused=False) is StepPhase.STAGING
    )
    assert (
        step_phase(10, {"queued": 4, "succeeded": 6}, started=True, gate=None, paused=False)
        is StepPhase.RUNNING
    )
    assert step_phase(10, {"queued": 4}, started=True, gate=None, paused=True) is StepPhase.PAUSED
    assert (
        step_phase(10, {"succeeded": 9, "accepted": 1}, started=True, gate=None, paused=False)
        is StepPhase.SUCCEEDED
    )
    assert (
        step_phase(10, {"succeeded": 9, "failed": 1}, started=True, gate=None, paused=False)
        is StepPhase.FAILED
    )
    assert (
        step_phase(10, {"cancelled": 10}, started=False, gate=None, paused=False)
        is StepPhase.CANCELLED
    )


def test_topological_order_and_blocked_steps():
    campaign = Campaign.model_validate(CAMPAIGN)
    ordered = [s.name for s in topological(campaign.spec.steps)]
    for s in campaign.spec.steps:
        for dep in s.depends_on:
            assert ordered.index(dep) < ordered.index(s.name)
    first = ordered[0]
    phases = {first: StepPhase.FAILED}
    assert blocked(campaign.spec, phases) == set(ordered[1:]) & {
        s.name for s in campaign.spec.steps if s.depends_on
    }


def test_rescues_are_grouped_by_memory_and_budget():
    groups = group_rescues([(3, GI, 2), (5, 2 * GI, 2), (7, GI, 2), (9, GI, 0)])
    assert groups == {(GI, 2): [3, 7], (2 * GI, 2): [5], (GI, 0): [9]}


def test_index_at_reads_one_position_of_a_range_list():
    text = "3,7-9,20"
    assert [index_at(text, p) for p in range(5)] == parse_indexes(text)
    with pytest.raises(IndexError):
        index_at(text, 5)


def test_outputs_without_patterns_are_all_expected_and_none_required():
    sort = sort_outputs([], {"visit": 1}, ["a.fits", "b.log"])
    assert (sort.expected, sort.junk, sort.missing) == (["a.fits", "b.log"], [], [])
    assert sort_outputs([], {}, []).missing == []


def test_outputs_are_sorted_into_expected_junk_and_missing_by_data_id():
    patterns = ["calexp-{visit}-{detector}.fits", "src-{visit}-*.parq", "log-?.txt"]
    names = ["calexp-12-94.fits", "calexp-12-95.fits", "src-12-a.parq", "core.1234"]
    sort = sort_outputs(patterns, {"visit": 12, "detector": 94}, names)
    assert sort.expected == ["calexp-12-94.fits", "src-12-a.parq"]
    assert sort.junk == ["calexp-12-95.fits", "core.1234"]
    assert sort.missing == ["log-?.txt"]


def test_a_data_id_value_is_literal_text_in_a_pattern():
    sort = sort_outputs(["out-{band}.fits"], {"band": "*"}, ["out-*.fits", "out-g.fits"])
    assert (sort.expected, sort.junk) == (["out-*.fits"], ["out-g.fits"])


def test_a_query_coverage_fills_scope_and_name_of_the_input_did():
    data_id = {"did": "raw:exp-7.fits"}
    sort = sort_outputs(["{name}.calexp", "{scope}-*.log"], data_id, ["exp-7.fits.calexp"])
    assert sort.expected == ["exp-7.fits.calexp"]
    assert sort.missing == ["raw-*.log"]


def test_a_placeholder_without_a_value_is_a_key_error():
    with pytest.raises(KeyError):
        sort_outputs(["{visit}.fits"], {"detector": 1}, ["1.fits"])


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("calexp/{visit}.fits", "characters no output name can have ('/')"),
        ("a{visit.fits", "stray brace"),
        ("a{1x}.fits", "stray brace"),
        ("a[bc.fits", "unclosed or empty"),
        ("a[].fits", "unclosed or empty"),
        ("a!b.fits", "'!' outside"),
        ("a b.fits", "(' ')"),
    ],
)
def test_bad_output_patterns_are_refused_with_the_reason(pattern, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        output_placeholders(pattern)


def test_good_output_patterns_name_their_placeholders():
    assert output_placeholders("calexp-{visit}-{detector}.fits") == ["visit", "detector"]
    assert output_placeholders("x-[!a-c]?.*") == []


def _campaign(step: dict, coverage: dict) -> dict:
    body = json.loads(json.dumps(CAMPAIGN))
    body["spec"]["steps"] = [{"name": "one", "pipeline": "p.yaml#one", **step}]
    body["spec"]["coverage"] = coverage
    return body


@pytest.mark.parametrize(
    ("step", "coverage", "field", "message"),
    [
        (
            {"expectedOutputs": ["ok-{visit}.fits", "x-{exposure}.fits"]},
            {"dataIds": [{"visit": 1}, {"visit": 2}]},
            ("steps", 0, "expectedOutputs", 1),
            "data id 0 (coverage.dataIds[0]) has no key 'exposure'",
        ),
        (
            {"expectedOutputs": ["x-{visit}.fits"]},
            {"dataIds": [{"visit": 1}, {"detector": 2}]},
            ("steps", 0, "expectedOutputs", 0),
            "data id 1 (coverage.dataIds[1]) has no key 'visit'",
        ),
        (
            {"expectedOutputs": ["x-{visit}.fits"]},
            {"query": {"dids": ["raw:a"]}},
            ("steps", 0, "expectedOutputs", 0),
            "placeholders are {scope} and {name}",
        ),
        (
            {"expectedOutputs": ["x.fits", "x.fits"]},
            {"dataIds": [{"visit": 1}]},
            ("steps", 0, "expectedOutputs", 1),
            "listed twice",
        ),
        (
            {"expectedOutputs": ["x/y.fits"]},
            {"dataIds": [{"visit": 1}]},
            ("steps", 0, "expectedOutputs", 0),
            "('/')",
        ),
    ],
)
def test_expected_outputs_are_checked_against_the_coverage(step, coverage, field, message):
    with pytest.raises(ValidationError) as raised:
        Campaign.model_validate(_campaign(step, coverage))
    [error] = raised.value.errors()
    assert message in error["msg"]
    # The model-level validator's error says where inside the model (`LocatedValueError`).
    where = (*error["loc"], *getattr(error["ctx"]["error"], "path", ()))
    assert where == ("spec", *field)


def test_expected_outputs_with_known_keys_are_accepted():
    body = _campaign(
        {"expectedOutputs": ["calexp-{visit}-*.fits", "{name}.x"]}, {"query": {"dids": ["s:a"]}}
    )
    with pytest.raises(ValidationError):
        Campaign.model_validate(body)  # {visit} is no key of a query's data id
    body = _campaign({"expectedOutputs": ["{scope}-{name}.x"]}, {"query": {"dids": ["s:a"]}})
    assert Campaign.model_validate(body).spec.steps[0].expected_outputs == ["{scope}-{name}.x"]
    body = _campaign({"expectedOutputs": ["c-{visit}.fits"]}, {"dataIds": [{"visit": 3}]})
    assert Campaign.model_validate(body).spec.steps[0].expected_outputs == ["c-{visit}.fits"]
