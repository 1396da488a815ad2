"""``steward render``: a site's deployment manifests from templates, values and its Site.

As Phalanx keeps ``values.yaml`` and ``values-<env>.yaml`` per application, Steward keeps
``deploy/values.yaml`` (what every site shares: the global Rucio, the image, resources) and
``deploy/values-<site>.yaml`` (what differs), and the Site resource of ``sites/<site>.yaml``
says what the site is (a site with the ``batch`` role runs campaigns, so it gets the campaign
PriorityClasses). Jinja2 templates (``steward/templates/*.yaml.jinja``, StrictUndefined: a
misspelt value is an error, never an empty string) turn them into plain YAML that Argo CD, Flux
or ``kubectl apply`` deploys as it is, one object per file under ``manifests/<site>/``.

The operator's RBAC rules are data here, each with the code that needs it, so the rendered
roles grant exactly what the code calls: kopf's calls are derived from the registered handlers
(`steward.handlers.rbac`), Steward's own are `OWN_RULES` and `CAMPAIGN_RULES` (the campaign
operator's Jobs, pods, ConfigMaps, in a role of their own), and `PENDING_RULES` are those for
code being written on other branches, in roles of their own so they are easy to check and to
drop (none today).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from steward.constants import (
    CAMPAIGN_PRIORITY_CLASS_PREFIX,
    FINALIZED_AT_ADMISSION,
    GROUP,
    VERSION,
)
from steward.exceptions import ConfigurationError
from steward.models import KINDS
from steward.models.campaign import Priority
from steward.models.crd import build_crds
from steward.models.site import Site
from steward.services.checkpoint import CHECKPOINTS_CONFIGMAP, KEY_CONFIGMAP
from steward.storage.yamlfile import Document, YAMLLoadError, load_documents

__all__ = [
    "CAMPAIGN_RULES",
    "OWN_RULES",
    "PEERING_CRD",
    "PENDING_RULES",
    "WORKER_RULES",
    "PolicyRule",
    "RenderError",
    "Values",
    "load_values",
    "priority_classes",
    "render",
    "roles",
    "subject",
]

RoleName = Literal[
    "steward", "steward-campaigns", "steward-multikueue", "steward-multikueue-worker"
]


@dataclass(frozen=True)
class PolicyRule:
    """One RBAC rule, and why the operator needs it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    """The code that makes these calls (shown in review, kept out of the manifests)."""
    resource_names: tuple[str, ...] = ()
    namespaced: bool = False
    """In a Role of the operator's namespace (or ``namespace``) rather than the ClusterRole."""
    namespace: str | None = None
    """The Role's namespace when it is not the operator's (Kueue's, for MultiKueue)."""
    role: RoleName = "steward"
    """Which role carries it: ``steward`` for landed code, others for code landing later.
    ``steward-multikueue-worker`` is bound to the manager's account at a worker, not to the
    operator (`subject`)."""


class RenderError(ConfigurationError):
    """Values, a Site or a template are wrong; the message names the file and field."""


# --- values -------------------------------------------------------------------------------------


class _Values(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKey(_Values):
    """A key of a Secret the site creates (by hand, from Vault, or by its secrets operator)."""

    name: str = Field(min_length=1)
    """Secret name, in the operator's namespace."""
    key: str = Field(min_length=1)
    """Key within the Secret."""


class Image(_Values):
    """The operator image (built from the Containerfile)."""

    repository: str = Field(min_length=1)
    """Registry and repository."""
    tag: str = Field(min_length=1)
    """Tag; with ``digest`` set, the digest decides and the tag only documents."""
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    """``sha256:...`` to pin the exact image."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Kubernetes imagePullPolicy."""


class Quantities(_Values):
    """CPU and memory quantities."""

    cpu: str
    """CPU, e.g. ``250m``."""
    memory: str
    """Memory, e.g. ``512Mi``."""


class Resources(_Values):
    """Requests and limits of the operator container."""

    requests: Quantities
    """Scheduled for."""
    limits: Quantities
    """Never exceeded (memory: OOM-killed beyond it)."""


class RucioTimeouts(_Values):
    """Seconds each kind of Rucio call waits (``STEWARD_RUCIO_*_TIMEOUT``).

    Defaults as steward.config.Settings; a site far from Rucio (IN2P3 over the WAN) raises
    them in its own values file.
    """

    connect: float = Field(default=5.0, gt=0)
    """To establish a connection."""
    read: float = Field(default=10.0, gt=0)
    """For the answer to a single read."""
    write: float = Field(default=30.0, gt=0)
    """For the answer to a write."""
    listing: float = Field(default=60.0, gt=0)
    """For each part of a bulk listing's answer."""


class Rucio(_Values):
    """The facility's Rucio (global: the same for every site)."""

    host: str = Field(min_length=1)
    """REST endpoint."""
    auth_host: str | None = None
    """Authentication endpoint, when it differs."""
    account: str = Field(min_length=1)
    """Account Steward acts as."""
    username: str = Field(min_length=1)
    """Userpass identity."""
    password: SecretKey
    """Where the password is (mounted as a file, never an environment variable)."""
    calls_per_second: float = Field(default=20.0, gt=0)
    """Rate cap on Rucio calls."""
    timeouts: RucioTimeouts = Field(default_factory=RucioTimeouts)
    """How long calls wait for Rucio."""
    max_calls: int = Field(default=4, ge=1, le=63)
    """Rucio calls in flight at once; below ``operator.workers`` (checked with it)."""


class Audit(_Values):
    """The audit store and its checkpoint signing key."""

    database_url: SecretKey
    """Secret key holding the SQLAlchemy URL of the audit database (it holds a password)."""
    signing_key: SecretKey
    """Secret key holding the private key that signs audit checkpoints."""


class Operator(_Values):
    """Settings of the operator process (``STEWARD_*``, see steward.config.Settings)."""

    refresh_interval: float = Field(default=60.0, gt=0)
    """Seconds between timer reconciles."""
    workers: int = Field(default=8, ge=1, le=64)
    """Handler threads."""
    kube_connections: int = Field(default=32, ge=4, le=1024)
    """Connections to the API server at most."""
    cluster_id: str | None = None
    """Cluster identity in owner tags; read from ``kube-system`` (one more RBAC rule) if unset."""


class Peering(_Values):
    """Leader election through kopf peering."""

    name: str = Field(default="steward", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """ClusterKopfPeering object the processes share."""
    lifetime: int = Field(default=60, ge=5, le=3600)
    """Seconds before a silent leader is replaced."""


class Ports(_Values):
    """Container ports."""

    health: int = Field(default=8080, ge=1024, le=65535)
    """Liveness and readiness (kopf's probe endpoint)."""
    metrics: int = Field(default=9090, ge=1024, le=65535)
    """Prometheus metrics."""
    webhook: int = Field(default=8443, ge=1024, le=65535)
    """Admission webhook (HTTPS)."""


class Webhook(_Values):
    """The validating admission webhook."""

    url: str | None = Field(default=None, pattern=r"^https://")
    """Call this URL instead of the Service: for an operator run outside the cluster (the
    tests, a developer's machine). The certificate then also names its host."""
    timeout_seconds: int = Field(default=10, ge=1, le=30)
    """How long the API server waits for an answer before applying the failure policy."""


class NetworkPolicyValues(_Values):
    """Where the operator may connect to, and who may scrape it."""

    api_server: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    """CIDRs of the Kubernetes API server (ports 443 and 6443)."""
    rucio: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    """CIDRs of Rucio (port 443)."""
    database: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    """CIDRs of the audit database (PostgreSQL, port 5432)."""
    monitoring_namespace: str = "monitoring"
    """Namespace whose pods may scrape the metrics port (Prometheus)."""


class MultiKueueValues(_Values):
    """Multi-site dispatch: what a MultiKueue manager reads, and what a worker lets it do."""

    namespace: str = Field(default="kueue-system", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Kueue's namespace, where MultiKueue keeps its worker kubeconfig Secrets."""
    worker_secrets: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")]] = Field(
        default_factory=list
    )
    """The worker sites' kubeconfig Secrets (each worker Site's ``batch.kubeconfigSecret``):
    the operator reads them to record the attempts of its campaigns' pods at the workers.
    Empty (the default) renders no Role in Kueue's namespace, which must exist first."""
    manager_service_account: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """At a worker site: the ServiceAccount (in ``namespace``) that the manager's MultiKueue
    and Steward act as here, through the kubeconfig the manager's Secret holds. Rendered with
    a token Secret (``<name>-token``, from which that kubeconfig is made) and the ClusterRole
    ``steward-multikueue-worker``: what Kueue's MultiKueue calls for batch Jobs and what
    Steward calls for its campaigns' pods and ConfigMap copies. None (the default): this site
    is no worker, nothing is rendered."""


class Values(_Values):
    """Everything a site's manifests are rendered from, besides its Site resource."""

    namespace: str = Field(default="steward", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Namespace of the operator (and of the policies' default namespace)."""
    image: Image
    """Operator image."""
    resources: Resources
    """Container resources."""
    rucio: Rucio
    """The facility's Rucio."""
    audit: Audit
    """Audit store."""
    operator: Operator = Field(default_factory=Operator)
    """Operator settings."""
    peering: Peering = Field(default_factory=Peering)
    """Leader election."""
    ports: Ports = Field(default_factory=Ports)
    """Container ports."""
    webhook: Webhook = Field(default_factory=Webhook)
    """Admission webhook."""
    network_policy: NetworkPolicyValues = Field(default_factory=NetworkPolicyValues)
    """NetworkPolicy."""
    multi_kueue: MultiKueueValues = Field(default_factory=MultiKueueValues)
    """Multi-site dispatch, for a site whose campaigns list ``sites``."""

    @model_validator(mode="after")
    def _max_calls_below_workers(self) -> Values:
        # The operator refuses to start otherwise (steward.config.Settings): refuse to render.
        if self.rucio.max_calls >= self.operator.workers:
            raise PydanticCustomError(
                _MAX_CALLS_ERROR,
                "{max_calls} must be below operator.workers ({workers}): "
                "hung Rucio calls would hold every handler thread, and the operator refuses "
                "to start",
                {"max_calls": self.rucio.max_calls, "workers": self.operator.workers},
            )
        return self


_MAX_CALLS_ERROR: Final = "max_calls_not_below_workers"
_CROSS_FIELD: Final[Mapping[str, tuple[str, ...]]] = {_MAX_CALLS_ERROR: ("rucio", "maxCalls")}
"""Where each check across fields is reported (pydantic gives them no location)."""


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base`` (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _one_mapping(path: Path) -> Document:
    try:
        documents = load_documents(path)
    except YAMLLoadError as exc:
        raise RenderError(str(exc)) from None
    except OSError as exc:
        raise RenderError(f"{path}: cannot read: {exc.strerror}") from None
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        raise RenderError(f"{path}:1:1: a values file is one YAML mapping")
    return documents[0]


def load_values(defaults: Path, site: Path, overrides: Mapping[str, Any] | None = None) -> Values:
    """Read ``deploy/values.yaml`` with ``deploy/values-<site>.yaml`` over it.

    ``overrides`` (nested, camelCase as in the files) go over both: the tests point the
    webhook at their own loopback address this way.

    Raises
    ------
    RenderError
        A file is missing or not YAML, or a value is wrong; the message says
        ``path:line:column: field: problem`` for each, from the file that set it.
    """
    base, specific = _one_mapping(defaults), _one_mapping(site)
    merged = _merge(_merge(base.data, specific.data), overrides or {})
    try:
        return Values.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"]) or _CROSS_FIELD.get(error["type"], ())
            known = ".".join(str(p) for p in loc)
            where = specific if _has(specific.data, loc[:-1] or loc) else base
            pos = where.position(loc, value=error["type"] != "extra_forbidden")
            lines.append(f"{where.path}:{pos.line}:{pos.column}: {known}: {error['msg']}")
        raise RenderError("\n".join(lines)) from None


def _has(data: Any, path: Sequence[str | int]) -> bool:  # noqa: ANN401 - YAML data
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


# --- RBAC -----------------------------------------------------------------------------------------

OWN_RULES: Final = (
    PolicyRule(
        ("kopf.dev",),
        ("clusterkopfpeerings",),
        ("list", "watch"),
        "kopf peering: observe the other processes (leader election)",
    ),
    PolicyRule(
        (GROUP,),
        ("sites",),
        ("list",),
        "services/admission.py: the webhook reads the live Sites",
    ),
    PolicyRule(
        ("kueue.x-k8s.io",),
        ("resourceflavors", "clusterqueues"),
        ("delete", "get", "list", "patch"),
        "services/queueing.py: a Site's flavors and queues; pruning those it no longer has",
    ),
    PolicyRule(
        ("kueue.x-k8s.io",),
        (
            "workloadpriorityclasses",
            "localqueues",
            "admissionchecks",
            "multikueueconfigs",
            "multikueueclusters",
        ),
        ("get", "list", "patch"),
        "services/queueing.py: priority classes, campaign namespaces' queues, multi-site dispatch",
    ),
    PolicyRule(
        ("kueue.x-k8s.io",),
        ("workloads",),
        ("get", "list", "patch", "watch"),
        "services/queueing.py: admission state of campaign Jobs; pause and resume",
    ),
    PolicyRule(
        ("kueue.x-k8s.io",),
        ("workloads/status", "admissionchecks/status"),
        ("patch",),
        "services/campaign/staging_check.py: the staging check's state in a Workload, and "
        "its AdmissionCheck's Active condition",
    ),
)
"""What Steward's code calls itself, whatever the values."""

CAMPAIGN_RULES: Final = (
    PolicyRule(
        ("batch",),
        ("jobs",),
        ("create", "delete", "get", "list", "patch"),
        "storage/batch.py: one Indexed Job per step and shard and rescues; suspend to pause; "
        "delete on termination and closeout",
        role="steward-campaigns",
    ),
    PolicyRule(
        ("",),
        ("pods",),
        ("list", "patch"),
        "storage/batch.py: classify and record each ended pod, then label it recorded and drop "
        "Steward's ledger finalizer",
        role="steward-campaigns",
    ),
    PolicyRule(
        ("",),
        ("configmaps",),
        ("create", "get"),
        "storage/batch.py: each shard's data ids by completion index",
        role="steward-campaigns",
    ),
    PolicyRule(
        ("scheduling.k8s.io",),
        ("priorityclasses",),
        ("get",),
        "storage/batch.py: check the campaign PriorityClasses this deployment ships",
        role="steward-campaigns",
    ),
)
"""The campaign operator's own calls (kopf's for Campaign come from the handlers)."""

_KUEUE_V0192: Final = "Kueue v0.19.2 "
_WORKER: Final = "steward-multikueue-worker"

WORKER_RULES: Final = (
    PolicyRule(
        ("batch",),
        ("jobs",),
        ("create", "delete", "get", "list", "watch"),
        _KUEUE_V0192 + "MultiKueue's batch/Job adapter (pkg/controller/jobs/job/"
        "job_multikueue_adapter.go: SyncJob gets and creates the copy, DeleteRemoteObject "
        "deletes it; multikueuecluster.go watches the origin's Jobs); Steward's "
        "storage/batch.py get_job: the copy that owns a ConfigMap copy",
        role=_WORKER,
    ),
    PolicyRule(
        ("batch",),
        ("jobs/status",),
        ("get",),
        _KUEUE_V0192 + "site/static/examples/multikueue/create-multikueue-kubeconfig.sh and "
        "test/util/multikueue.go grant it for the batch/Job integration",
        role=_WORKER,
    ),
    PolicyRule(
        ("kueue.x-k8s.io",),
        ("workloads",),
        ("create", "delete", "get", "list", "update", "watch"),
        _KUEUE_V0192 + "pkg/controller/admissionchecks/multikueue/workload.go: a Workload "
        "copy per nominated worker (create), its priority and finalizer (update), removal "
        "(delete); multikueuecluster.go: watch and garbage-collect the origin's copies",
        role=_WORKER,
    ),
    PolicyRule(
        ("kueue.x-k8s.io",),
        ("workloads/status",),
        ("get", "patch", "update"),
        _KUEUE_V0192 + "setup_multikueue.md's role; workload.go updates it to open a "
        "preemption gate (MultiKueueOrchestratedPreemption)",
        role=_WORKER,
    ),
    PolicyRule(
        ("",),
        ("pods",),
        ("list", "patch"),
        "storage/workers.py, storage/batch.py: the manager's Steward records its campaigns' "
        "pods at the worker and drops their ledger finalizer",
        role=_WORKER,
    ),
    PolicyRule(
        ("",),
        ("configmaps",),
        ("create", "deletecollection", "get", "patch"),
        "services/campaign/jobs.py _copy_config_map: a shard's ConfigMap copied to the worker "
        "that runs it, owned there by the worker's Job copies (patch adds one); removed with "
        "the campaign (deletecollection by label)",
        role=_WORKER,
    ),
)
"""What a manager's identity does at a worker (bound to ``multiKueue.managerServiceAccount``).

Left out: ``patch`` on Jobs (MultiKueue patches a copy only for elastic Jobs, which Steward
turns off) and ``get``/``list``/``watch`` on ClusterQueues and LocalQueues (only with the
alpha gate MultiKueueManagerQuotaAutomation, off by default)."""

PENDING_RULES: Final[tuple[PolicyRule, ...]] = ()
"""Rules for code landing on other branches, each in a role named for it; none today."""


def _value_rules(values: Values) -> list[PolicyRule]:
    """Rules whose names come from the values."""
    rules = [
        PolicyRule(
            ("",),
            ("configmaps",),
            ("get", "patch"),
            "services/checkpoint.py: the signed audit checkpoints and the public key",
            resource_names=(CHECKPOINTS_CONFIGMAP, KEY_CONFIGMAP),
            namespaced=True,
        ),
        PolicyRule(
            ("",),
            ("configmaps",),
            ("create",),
            "storage/kubernetes.py ConfigMaps.merge: create the checkpoint ConfigMaps once "
            "(create cannot be limited to names)",
            namespaced=True,
        ),
        PolicyRule(
            ("kopf.dev",),
            ("clusterkopfpeerings",),
            ("get", "patch"),
            "kopf peering: this process's keep-alive in the peering object; "
            "handlers/refresh.py: whether this process leads",
            resource_names=(values.peering.name,),
        ),
        PolicyRule(
            ("admissionregistration.k8s.io",),
            ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"),
            ("get", "patch"),
            "storage/webhook.py: keep the webhook configurations' caBundle current",
            resource_names=(_WEBHOOK_CONFIGURATION,),
        ),
        PolicyRule(
            ("",),
            ("secrets",),
            ("get", "patch"),
            "storage/webhook.py: the webhook's CA and serving certificate",
            resource_names=(_WEBHOOK_SECRET,),
            namespaced=True,
        ),
    ]
    if values.multi_kueue.worker_secrets:
        rules.append(
            PolicyRule(
                ("",),
                ("secrets",),
                ("get",),
                "storage/workers.py: reach the worker sites of multi-site campaigns to record "
                "their pods",
                resource_names=tuple(sorted(set(values.multi_kueue.worker_secrets))),
                namespaced=True,
                namespace=values.multi_kueue.namespace,
                role="steward-multikueue",
            )
        )
    if values.multi_kueue.manager_service_account is not None:
        rules.extend(WORKER_RULES)
    if values.operator.cluster_id is None:
        rules.append(
            PolicyRule(
                ("",),
                ("namespaces",),
                ("get",),
                "storage/kubernetes.py cluster_identity: the kube-system UID names the cluster",
                resource_names=("kube-system",),
            )
        )
    return rules


def roles(
    kopf: Sequence[PolicyRule], values: Values
) -> dict[tuple[RoleName, str | None], list[dict[str, Any]]]:
    """Rules by role, merged per resource and sorted, as Kubernetes writes them.

    Keyed by (role, namespace): the namespace of a Role, None for a ClusterRole.
    """
    merged: dict[tuple[RoleName, str | None, tuple[str, ...], str, tuple[str, ...]], set[str]] = {}
    for rule in [*kopf, *OWN_RULES, *CAMPAIGN_RULES, *_value_rules(values), *PENDING_RULES]:
        namespace = (rule.namespace or values.namespace) if rule.namespaced else None
        for resource in rule.resources:
            key = (rule.role, namespace, rule.api_groups, resource, rule.resource_names)
            merged.setdefault(key, set()).update(rule.verbs)
    result: dict[tuple[RoleName, str | None], list[dict[str, Any]]] = {}
    for (role, namespace, groups, resource, names), verbs in sorted(
        merged.items(), key=lambda item: (item[0][0], item[0][1] or "", *item[0][2:])
    ):
        entry: dict[str, Any] = {
            "apiGroups": list(groups),
            "resources": [resource],
            "verbs": sorted(verbs),
        }
        if names:
            entry["resourceNames"] = list(names)
        result.setdefault((role, namespace), []).append(entry)
    return result


def subject(role: RoleName, values: Values) -> dict[str, str]:
    """Who a role is bound to: the operator, or at a worker the manager's account."""
    if role == _WORKER and values.multi_kueue.manager_service_account is not None:
        return {
            "kind": "ServiceAccount",
            "name": values.multi_kueue.manager_service_account,
            "namespace": values.multi_kueue.namespace,
        }
    return {"kind": "ServiceAccount", "name": "steward", "namespace": values.namespace}


# --- rendering ----------------------------------------------------------------------------------

_WEBHOOK_SECRET: Final = "steward-webhook-tls"  # noqa: S105 - a Secret's name
_WEBHOOK_CONFIGURATION: Final = "steward"
_SERVICE: Final = "steward"

PEERING_CRD: Final = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Cluster",
        "group": "kopf.dev",
        "names": {
            "kind": "ClusterKopfPeering",
            "plural": "clusterkopfpeerings",
            "singular": "clusterkopfpeering",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                },
            }
        ],
    },
}
"""kopf's cluster-wide peering CRD (group kopf.dev, as kopf >= 1.29 looks it up)."""

_ORDER: Final = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ClusterKopfPeering",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
)
"""Apply order: file names start with the kind's place here, so ``kubectl apply -f DIR`` creates
the namespace before what lives in it."""


def priority_classes() -> list[dict[str, Any]]:
    """The campaign PriorityClasses, one per `Priority` level."""
    return [
        {"name": f"{CAMPAIGN_PRIORITY_CLASS_PREFIX}{level.name.lower()}", "value": int(level)}
        for level in Priority
    ]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("steward", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML, not HTML; values are emitted with tojson
        keep_trailing_newline=True,
    )


def _context(site: Site, values: Values, kopf: Sequence[PolicyRule]) -> dict[str, Any]:
    namespace = values.namespace
    hosts = [f"{_SERVICE}.{namespace}.svc"]
    if values.webhook.url is not None:
        host = values.webhook.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        hosts.append(host.strip("[]"))
    settings = {
        "STEWARD_SITE": site.metadata.name,
        "STEWARD_OPERATOR_NAMESPACE": namespace,
        "STEWARD_RUCIO_HOST": values.rucio.host,
        "STEWARD_RUCIO_ACCOUNT": values.rucio.account,
        "STEWARD_RUCIO_USERNAME": values.rucio.username,
        "STEWARD_RUCIO_CALLS_PER_SECOND": str(values.rucio.calls_per_second),
        "STEWARD_RUCIO_CONNECT_TIMEOUT": str(values.rucio.timeouts.connect),
        "STEWARD_RUCIO_READ_TIMEOUT": str(values.rucio.timeouts.read),
        "STEWARD_RUCIO_WRITE_TIMEOUT": str(values.rucio.timeouts.write),
        "STEWARD_RUCIO_LISTING_TIMEOUT": str(values.rucio.timeouts.listing),
        "STEWARD_RUCIO_MAX_CALLS": str(values.rucio.max_calls),
        "STEWARD_REFRESH_INTERVAL": str(values.operator.refresh_interval),
        "STEWARD_WORKERS": str(values.operator.workers),
        "STEWARD_KUBE_CONNECTIONS": str(values.operator.kube_connections),
        "STEWARD_METRICS_PORT": str(values.ports.metrics),
        "STEWARD_METRICS_ADDRESS": "0.0.0.0",  # noqa: S104 - in a pod, behind the NetworkPolicy
        "STEWARD_PEERING_NAME": values.peering.name,
        "STEWARD_PEERING_LIFETIME": str(values.peering.lifetime),
        "STEWARD_WEBHOOK_PORT": str(values.ports.webhook),
        "STEWARD_WEBHOOK_ADDRESS": "0.0.0.0",  # noqa: S104 - same
        "STEWARD_WEBHOOK_HOSTS": json.dumps(hosts),
        "STEWARD_WEBHOOK_SECRET": _WEBHOOK_SECRET,
        "STEWARD_WEBHOOK_CONFIGURATION": _WEBHOOK_CONFIGURATION,
    }
    if values.rucio.auth_host is not None:
        settings["STEWARD_RUCIO_AUTH_HOST"] = values.rucio.auth_host
    if values.operator.cluster_id is not None:
        settings["STEWARD_CLUSTER_ID"] = values.operator.cluster_id
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    rendered_roles = roles(kopf, values)
    image = values.image
    reference = (
        f"{image.repository}@{image.digest}" if image.digest else f"{image.repository}:{image.tag}"
    )
    return {
        "site": site,
        "values": values,
        "settings": settings,
        "settings_digest": digest,
        "image": reference,
        "labels": {
            "app.kubernetes.io/name": "steward",
            "app.kubernetes.io/part-of": "steward",
            "app.kubernetes.io/version": image.tag,
            "steward.lsst.io/site": site.metadata.name,
        },
        "selector": {"app.kubernetes.io/name": "steward"},
        "roles": rendered_roles,
        "subjects": {role: subject(role, values) for role, _ in rendered_roles},
        "priority_classes": priority_classes() if "batch" in site.spec.roles else [],
        "kinds": [{"plural": info.plural, "id": f"validate-{info.plural}"} for info in KINDS],
        "finalized": [
            {"plural": plural, "id": f"finalize-{plural}"} for plural in FINALIZED_AT_ADMISSION
        ],
        "group": GROUP,
        "version": VERSION,
        "service": _SERVICE,
        "webhook_secret": _WEBHOOK_SECRET,
        "webhook_configuration": _WEBHOOK_CONFIGURATION,
    }


def render(site: Site, values: Values, kopf: Sequence[PolicyRule]) -> dict[str, dict[str, Any]]:
    """Every manifest of the site, by file name (``NN-kind-name.yaml``), in apply order.

    Raises
    ------
    RenderError
        A template uses a value that does not exist, or does not produce valid YAML.
    """
    environment = _environment()
    context = _context(site, values, kopf)
    documents: list[dict[str, Any]] = [PEERING_CRD, *build_crds().values()]
    for name in sorted(environment.list_templates(extensions=["jinja"])):
        try:
            text = environment.get_template(name).render(context)
        except jinja2.UndefinedError as exc:
            raise RenderError(f"templates/{name}: {exc.message}") from None
        try:
            documents.extend(d for d in yaml.safe_load_all(text) if d is not None)
        except yaml.YAMLError as exc:
            raise RenderError(f"templates/{name} rendered invalid YAML: {exc}") from None
    files: dict[str, dict[str, Any]] = {}
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        order = _ORDER.index(kind) if kind in _ORDER else len(_ORDER)
        files[f"{order:02d}-{kind.lower()}-{name}.yaml"] = document
    return dict(sorted(files.items()))
