"""The rendered manifests: least privilege, a hardened singleton Deployment, values errors.

Pure tests of `steward.services.render` and `steward.handlers.rbac`; the API server applies
the same manifests in tests/deploy.
"""

import json
import os
from pathlib import Path

import jinja2
import pytest
import yaml

from steward.cli.render import load_site
from steward.config import Settings
from steward.constants import CAMPAIGN_PRIORITY_CLASS_PREFIX
from steward.handlers.admission import WEBHOOK_IDS
from steward.handlers.rbac import kopf_rules
from steward.models import KINDS
from steward.models.campaign import Priority
from steward.services.render import (
    CAMPAIGN_RULES,
    PENDING_RULES,
    RenderError,
    _environment,
    load_values,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SITES = sorted(p.stem.removeprefix("values-") for p in DEPLOY.glob("values-*.yaml"))
PENDING_SETTINGS: set[str] = set()
"""Settings the manifests set for code still being written on other branches."""


def _render(site="base", overrides=None):
    values = load_values(DEPLOY / "values.yaml", DEPLOY / f"values-{site}.yaml", overrides)
    return render(load_site(ROOT / "sites", site), values, kopf_rules())


def _of_kind(documents, kind):
    return [d for d in documents.values() if d["kind"] == kind]


@pytest.fixture(scope="module", params=SITES)
def manifests(request):
    return _render(request.param)


def test_files_are_in_apply_order(manifests):
    names = list(manifests)
    assert names == sorted(names)
    kinds = [manifests[n]["kind"] for n in names]
    assert kinds.index("Namespace") < kinds.index("ServiceAccount") < kinds.index("Deployment")
    assert kinds.index("CustomResourceDefinition") < kinds.index("ClusterKopfPeering")


def test_no_wildcards_anywhere_in_rbac(manifests):
    for role in [*_of_kind(manifests, "ClusterRole"), *_of_kind(manifests, "Role")]:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            allowed = {"get", "list", "watch", "create", "patch", "delete"}
            if role["metadata"]["name"] == "steward-multikueue-worker":
                # Kueue's MultiKueue updates Workload copies; Steward deletes its ConfigMap
                # copies by label (tests/services/test_render_multikueue.py).
                allowed |= {"update", "deletecollection"}
            assert set(rule["verbs"]) <= allowed


def test_operator_role_grants_what_kopf_does_for_our_handlers(manifests):
    (role,) = [r for r in _of_kind(manifests, "ClusterRole") if r["metadata"]["name"] == "steward"]
    rules = {
        (tuple(r["apiGroups"]), r["resources"][0], tuple(r.get("resourceNames", []))): r
        for r in role["rules"]
    }
    for plural in ("sites", "replicationrules"):
        assert rules[("steward.lsst.io",), plural, ()]["verbs"] == ["list", "patch", "watch"]
        assert rules[("steward.lsst.io",), f"{plural}/status", ()]["verbs"] == ["patch"]
    assert rules[("",), "events", ()]["verbs"] == ["create"]
    # Nothing the code does not call: no get on Steward resources, no delete, no update; the
    # one delete is of the Kueue flavors and queues a Site no longer declares.
    assert all("update" not in r["verbs"] for r in role["rules"])
    deletes = {r["resources"][0] for r in role["rules"] if "delete" in r["verbs"]}
    assert deletes == {"resourceflavors", "clusterqueues"}
    assert all(
        r["apiGroups"] == ["kueue.x-k8s.io"] for r in role["rules"] if "delete" in r["verbs"]
    )
    # In the namespace only: the webhook's Secret and the audit checkpoints' ConfigMaps, by
    # name, with get and patch; create ConfigMaps (RBAC cannot limit create to names).
    (namespaced,) = [r for r in _of_kind(manifests, "Role") if r["metadata"]["name"] == "steward"]
    assert namespaced["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resourceNames": ["steward-audit-checkpoints", "steward-audit-key"],
            "resources": ["configmaps"],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get", "patch"],
            "resourceNames": ["steward-webhook-tls"],
        },
    ]
    assert not any("secrets" in r["resources"] for r in role["rules"])


def test_campaign_rules_live_in_a_role_of_their_own(manifests):
    names = {r["metadata"]["name"] for r in _of_kind(manifests, "ClusterRole")}
    names |= {r["metadata"]["name"] for r in _of_kind(manifests, "Role")}
    # a worker site also binds its manager's account (tests/services/test_render_multikueue.py)
    names.discard("steward-multikueue-worker")
    assert names == {"steward", "steward-campaigns"}
    assert PENDING_RULES == ()
    assert {rule.role for rule in CAMPAIGN_RULES} == {"steward-campaigns"}
    bindings = [*_of_kind(manifests, "ClusterRoleBinding"), *_of_kind(manifests, "RoleBinding")]
    bindings = [b for b in bindings if b["roleRef"]["name"] != "steward-multikueue-worker"]
    assert {b["roleRef"]["name"] for b in bindings} == names
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "steward", "namespace": "steward"}
        ]


def test_cluster_identity_rule_only_without_a_cluster_id():
    def namespaces_rule(documents):
        (role,) = [
            r for r in _of_kind(documents, "ClusterRole") if r["metadata"]["name"] == "steward"
        ]
        return [r for r in role["rules"] if r["resources"] == ["namespaces"]]

    assert namespaces_rule(_render()) == [
        {
            "apiGroups": [""],
            "resources": ["namespaces"],
            "verbs": ["get"],
            "resourceNames": ["kube-system"],
        }
    ]
    assert namespaces_rule(_render(overrides={"operator": {"clusterId": "usdf"}})) == []


def test_deployment_is_a_hardened_singleton(manifests):
    (deployment,) = _of_kind(manifests, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert container["args"][:2] == ["operator", "--liveness"]
    assert "--standalone" not in container["args"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}


def test_secrets_are_referenced_never_inlined(manifests):
    (deployment,) = _of_kind(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STEWARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "steward-audit-database",
        "key": "url",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["rucio"]["secret"]["secretName"] == "steward-rucio"
    assert volumes["audit-signing-key"]["secret"]["secretName"] == "steward-audit-signing-key"
    for secret in _of_kind(manifests, "Secret"):  # and a worker's token, filled by Kubernetes
        assert "data" not in secret
        assert "stringData" not in secret
    (config,) = _of_kind(manifests, "ConfigMap")
    assert not any("PASSWORD" in key and "FILE" not in key for key in config["data"])


def test_every_setting_the_manifests_set_is_a_setting(manifests, monkeypatch):
    (deployment,) = _of_kind(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (config,) = _of_kind(manifests, "ConfigMap")
    keys = {*config["data"], *(e["name"] for e in container["env"])}
    known = {f"STEWARD_{name.upper()}" for name in Settings.model_fields}
    steward_keys = {k for k in keys if k.startswith("STEWARD_")}
    assert steward_keys - known == PENDING_SETTINGS
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.webhook_hosts == ["steward.steward.svc"]
    assert settings.site in SITES


def test_priority_classes_follow_the_campaign_priorities(manifests):
    classes = {p["metadata"]["name"]: p["value"] for p in _of_kind(manifests, "PriorityClass")}
    assert classes == {
        f"{CAMPAIGN_PRIORITY_CLASS_PREFIX}{level.name.lower()}": int(level) for level in Priority
    }
    assert not any(p["globalDefault"] for p in _of_kind(manifests, "PriorityClass"))


def test_no_priority_classes_where_no_campaign_runs():
    site = load_site(ROOT / "sites", "summit")
    assert "batch" not in site.spec.roles
    values = load_values(DEPLOY / "values.yaml", DEPLOY / "values-base.yaml")
    assert _of_kind(render(site, values, kopf_rules()), "PriorityClass") == []


def test_webhook_covers_every_kind_and_fails_closed(manifests):
    (configuration,) = _of_kind(manifests, "ValidatingWebhookConfiguration")
    hooks = configuration["webhooks"]
    assert [h["rules"][0]["resources"] for h in hooks] == [[info.plural] for info in KINDS]
    for hook, info in zip(hooks, KINDS, strict=True):
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["clientConfig"]["service"]["path"] == f"/{WEBHOOK_IDS[info.kind]}"
        assert "caBundle" not in hook["clientConfig"]  # the operator puts its CA there
        conditions = {c["name"] for c in hook["matchConditions"]}
        assert conditions == {"spec-changed", "not-being-deleted"}


def test_mutating_webhook_finalizes_new_replication_rules_and_fails_open(manifests):
    (configuration,) = _of_kind(manifests, "MutatingWebhookConfiguration")
    (hook,) = configuration["webhooks"]
    assert hook["rules"][0]["resources"] == ["replicationrules"]
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["failurePolicy"] == "Ignore"  # down: admitted, and kopf adds it as before
    assert hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"]["path"] == "/finalize-replicationrules"
    assert "caBundle" not in hook["clientConfig"]
    (validating,) = _of_kind(manifests, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["name"] == validating["metadata"]["name"]


def test_webhook_url_for_an_operator_outside_the_cluster():
    documents = _render(overrides={"webhook": {"url": "https://127.0.0.1:9443"}})
    (configuration,) = _of_kind(documents, "ValidatingWebhookConfiguration")
    assert configuration["webhooks"][0]["clientConfig"] == {
        "url": "https://127.0.0.1:9443/validate-sites"
    }
    (config,) = _of_kind(documents, "ConfigMap")
    assert json.loads(config["data"]["STEWARD_WEBHOOK_HOSTS"]) == [
        "steward.steward.svc",
        "127.0.0.1",
    ]


def test_service_is_ready_for_a_service_monitor(manifests):
    (service,) = _of_kind(manifests, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["metrics"]["targetPort"] == "metrics"
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "steward"
    (policy,) = _of_kind(manifests, "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (budget,) = _of_kind(manifests, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def test_peering_object_and_its_crd_ship(manifests):
    (peering,) = _of_kind(manifests, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == "steward"
    crds = {c["metadata"]["name"] for c in _of_kind(manifests, "CustomResourceDefinition")}
    assert "clusterkopfpeerings.kopf.dev" in crds
    assert {f"{info.plural}.steward.lsst.io" for info in KINDS} <= crds


def test_a_misspelt_value_names_file_line_and_field(tmp_path):
    (tmp_path / "values.yaml").write_text((DEPLOY / "values.yaml").read_text())
    (tmp_path / "values-base.yaml").write_text("rucio:\n  hots: https://x\n")
    with pytest.raises(RenderError) as raised:
        load_values(tmp_path / "values.yaml", tmp_path / "values-base.yaml")
    assert str(raised.value) == (
        f"{tmp_path / 'values-base.yaml'}:2:3: rucio.hots: Extra inputs are not permitted"
    )


def test_a_bad_value_in_the_defaults_is_located_there(tmp_path):
    text = (DEPLOY / "values.yaml").read_text().replace("webhook: 8443", "webhook: 80")
    (tmp_path / "values.yaml").write_text(text)
    (tmp_path / "values-base.yaml").write_text("{}\n")
    with pytest.raises(RenderError) as raised:
        load_values(tmp_path / "values.yaml", tmp_path / "values-base.yaml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "webhook: 80" in t)
    assert str(raised.value).startswith(f"{tmp_path / 'values.yaml'}:{line}:")
    assert "ports.webhook: Input should be greater than or equal to 1024" in str(raised.value)


def test_templates_refuse_undefined_values():
    template = _environment().from_string("{{ values.nope }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(values={})


def test_rendered_yaml_round_trips(manifests):
    for document in manifests.values():
        assert yaml.safe_load(yaml.safe_dump(document)) == document


def _site_values(tmp_path, text):
    """deploy/values.yaml with ``text`` as a site's values file over it."""
    (tmp_path / "values.yaml").write_text((DEPLOY / "values.yaml").read_text())
    (tmp_path / "values-base.yaml").write_text(text)
    return tmp_path / "values.yaml", tmp_path / "values-base.yaml"


def test_rucio_call_path_defaults_are_the_operators():
    values = load_values(DEPLOY / "values.yaml", DEPLOY / "values-base.yaml")
    timeouts = values.rucio.timeouts
    fields = Settings.model_fields
    assert timeouts.connect == fields["rucio_connect_timeout"].default
    assert timeouts.read == fields["rucio_read_timeout"].default
    assert timeouts.write == fields["rucio_write_timeout"].default
    assert timeouts.listing == fields["rucio_listing_timeout"].default
    assert values.rucio.max_calls == fields["rucio_max_calls"].default


def test_rucio_call_path_set_by_a_site_reaches_the_operators_settings(tmp_path, monkeypatch):
    defaults, site = _site_values(
        tmp_path,
        "rucio:\n  timeouts:\n    read: 45\n    listing: 300\n  maxCalls: 6\n"
        "operator:\n  workers: 12\n",
    )
    values = load_values(defaults, site)
    documents = render(load_site(ROOT / "sites", "base"), values, kopf_rules())
    (config,) = _of_kind(documents, "ConfigMap")
    for key in list(os.environ):
        if key.startswith("STEWARD_"):
            monkeypatch.delenv(key)
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.rucio_read_timeout == 45
    assert settings.rucio_listing_timeout == 300
    assert settings.rucio_connect_timeout == 5  # merged from deploy/values.yaml
    assert settings.rucio_write_timeout == 30
    assert settings.rucio_max_calls == 6
    assert settings.workers == 12


def test_max_calls_not_below_workers_is_refused_naming_the_key(tmp_path):
    defaults, site = _site_values(tmp_path, "rucio:\n  maxCalls: 8\n")
    with pytest.raises(RenderError) as raised:
        load_values(defaults, site)
    assert str(raised.value) == (
        f"{site}:2:13: rucio.maxCalls: 8 must be below operator.workers (8): hung Rucio calls "
        "would hold every handler thread, and the operator refuses to start"
    )
    # The operator agrees: these settings would not start it.
    with pytest.raises(ValueError, match="rucio_max_calls"):
        Settings(rucio_max_calls=8, workers=8)


def test_a_timeout_that_is_not_positive_is_refused_naming_the_key(tmp_path):
    defaults, site = _site_values(tmp_path, "rucio:\n  timeouts:\n    write: 0\n")
    with pytest.raises(RenderError) as raised:
        load_values(defaults, site)
    assert str(raised.value) == (
        f"{site}:3:12: rucio.timeouts.write: Input should be greater than 0"
    )
