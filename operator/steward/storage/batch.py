"""Kubernetes batch objects of campaigns: Jobs, their pods, ConfigMaps and PriorityClasses.

The only module that talks to the Kubernetes API about workloads; `KubeResources` beside it
handles Steward's own custom resources. Lists read the raw JSON (`response_json`): the
client's model deserialisation costs about a millisecond per pod, too much for the thousands
of pods a pass may find ended.

What the operator needs from the API for campaigns, for the RBAC of its deployment:

=============================  ======================  ====================================
resource (group)               verbs                   why
=============================  ======================  ====================================
jobs (batch)                   create, get, list,      one Indexed Job per step and shard,
                               patch, delete           rescues; suspend to pause; get only
                                                       to check a name clash
pods (core)                    list, patch             ended pods: classify and record each
                                                       attempt, then drop Steward's
                                                       finalizer and label it recorded
configmaps (core)              create, get             data ids by completion index (the
                                                       Campaign owns them: deleted with it)
priorityclasses                get, create             one PriorityClass per campaign
(scheduling.k8s.io)                                    priority level
campaigns (steward.lsst.io)    get, list, watch,       kopf watches and patches them
                               patch
campaigns/status               patch                   status
sites (steward.lsst.io)        list                    the compute site's disk RSE
events (core)                  create                  an Event per step transition (kopf)
namespaces (core)              get (kube-system)       the cluster's identity, for owner
                                                       tags (unless STEWARD_CLUSTER_ID)
=============================  ======================  ====================================

Every pod carries the finalizer `POD_FINALIZER` (from the Job's pod template), so a pod that
ends while the operator is down, or that the Job controller or the pod garbage collector
would delete, stays until its attempt is in the ledger; `mark_recorded` removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes import client

from steward.constants import CAMPAIGN_PRIORITY_CLASS_PREFIX
from steward.exceptions import AlreadyExistsError, NotFoundError, PermanentError
from steward.storage.kubernetes import kube_call, response_json

__all__ = [
    "ANNOTATION_INVOCATIONS",
    "LABEL_CAMPAIGN",
    "LABEL_CAMPAIGN_UID",
    "LABEL_JOB",
    "LABEL_JOB_KIND",
    "LABEL_RECORDED",
    "LABEL_SHARD",
    "LABEL_STEP",
    "MANAGED_BY",
    "POD_FINALIZER",
    "BatchStorage",
    "JobSpec",
    "Owner",
    "priority_class_name",
]

LABEL_CAMPAIGN: Final = "steward.lsst.io/campaign"
LABEL_CAMPAIGN_UID: Final = "steward.lsst.io/campaign-uid"
LABEL_STEP: Final = "steward.lsst.io/step"
LABEL_SHARD: Final = "steward.lsst.io/shard"
LABEL_JOB: Final = "steward.lsst.io/job"
LABEL_JOB_KIND: Final = "steward.lsst.io/job-kind"
LABEL_RECORDED: Final = "steward.lsst.io/recorded"
"""Set on a pod once its attempt is in the ledger, so lists of ended pods skip it."""
ANNOTATION_INVOCATIONS: Final = "steward.lsst.io/invocations"
"""On every Job and pod: the campaign's invocation indexes by completion index, as ranges."""
POD_FINALIZER: Final = "steward.lsst.io/ledger"
"""Keeps an ended pod until its attempt is recorded."""
MANAGED_BY: Final = ("app.kubernetes.io/managed-by", "steward")

_STRATEGIC: Final = "application/strategic-merge-patch+json"
_MERGE: Final = "application/merge-patch+json"
_PAGE: Final = 1000


def priority_class_name(level: str) -> str:
    """Name of the PriorityClass of a campaign priority level (``steward-campaign-urgent``).

    The same names ``steward render`` ships (`CAMPAIGN_PRIORITY_CLASS_PREFIX`).
    """
    return f"{CAMPAIGN_PRIORITY_CLASS_PREFIX}{level}"


@dataclass(frozen=True)
class Owner:
    """The object whose deletion deletes a Job or ConfigMap.

    A campaign's Campaign; at a worker site, the Job copies that mount a ConfigMap copy.
    """

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = True
    """The one controlling owner (a Campaign), which also blocks its foreground deletion;
    False for one of several owners (a shard's Job copies at a worker)."""

    def reference(self) -> dict[str, Any]:
        """The ``ownerReferences`` entry."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": self.controller,
            "blockOwnerDeletion": self.controller,
        }


@dataclass(frozen=True)
class JobSpec:
    """One Indexed Job of a campaign step, as `steward.services.campaign` decides it."""

    name: str
    namespace: str
    owner: Owner
    labels: Mapping[str, str]
    """Labels of the Job and of each of its pods."""
    invocations: str
    """Invocation indexes by completion index (`ANNOTATION_INVOCATIONS`)."""
    completions: int
    parallelism: int
    retries: int
    """``backoffLimitPerIndex``."""
    pod_failure_policy: Mapping[str, Any]
    suspend: bool
    priority_class: str
    container: str
    image: str
    args: Sequence[str]
    env: Mapping[str, str]
    cpu: str
    memory: str
    """Request and limit."""
    config_map: str
    """The ConfigMap whose key ``<completion index>`` holds that invocation's data id."""
    mount_path: str
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    pod_annotations: Mapping[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        """The Job as the API takes it."""
        annotations = {**self.pod_annotations, ANNOTATION_INVOCATIONS: self.invocations}
        labels = {**self.labels, MANAGED_BY[0]: MANAGED_BY[1]}
        container: dict[str, Any] = {
            "name": self.container,
            "image": self.image,
            "args": list(self.args),
            "env": [{"name": k, "value": v} for k, v in sorted(self.env.items())],
            "resources": {
                "requests": {"cpu": self.cpu, "memory": self.memory},
                "limits": {"memory": self.memory},
            },
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "volumeMounts": [
                {"name": "invocations", "mountPath": self.mount_path, "readOnly": True}
            ],
        }
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "priorityClassName": self.priority_class,
            "containers": [container],
            "volumes": [{"name": "invocations", "configMap": {"name": self.config_map}}],
        }
        if self.node_selector:
            pod_spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in self.tolerations]
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {ANNOTATION_INVOCATIONS: self.invocations},
                "ownerReferences": [self.owner.reference()],
            },
            "spec": {
                "completionMode": "Indexed",
                "completions": self.completions,
                "parallelism": self.parallelism,
                "backoffLimitPerIndex": self.retries,
                "podFailurePolicy": dict(self.pod_failure_policy),
                "podReplacementPolicy": "Failed",
                "suspend": self.suspend,
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": annotations,
                        "finalizers": [POD_FINALIZER],
                    },
                    "spec": pod_spec,
                },
            },
        }


class BatchStorage:
    """Jobs, pods, ConfigMaps and PriorityClasses through one API client.

    Thread-safe; pod patches run on a small pool of threads (``workers``), as one pass may
    record thousands of ended pods and each needs its own PATCH.
    """

    def __init__(self, api: client.ApiClient, *, workers: int = 8) -> None:
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._scheduling = client.SchedulingV1Api(api)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="steward-pods")
        self._priority_classes_done = False

    def close(self) -> None:
        """Stop the patch threads."""
        self._pool.shutdown(wait=True)

    # -- PriorityClasses ----------------------------------------------------------------

    def ensure_priority_classes(self, levels: Mapping[str, int]) -> list[str]:
        """Create each missing PriorityClass of ``levels``; return what was created.

        Checked once per process: they are cluster-wide and nothing else edits them. A
        deployment made by ``steward render`` ships them, so the operator's role needs only
        ``get``; without them, it needs ``create`` too.

        Raises
        ------
        PermanentError
            One exists with another value (a PriorityClass's value cannot change), or one is
            missing and may not be created.
        """
        if self._priority_classes_done:
            return []
        changed: list[str] = []
        for level, value in levels.items():
            name = priority_class_name(level)
            body = {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
                "value": value,
                "globalDefault": False,
                "preemptionPolicy": "PreemptLowerPriority",
                "description": f"Steward campaigns of priority {level}",
            }
            try:
                existing = kube_call(
                    f"get PriorityClass {name}",
                    lambda n=name: response_json(  # type: ignore[misc]
                        self._scheduling.read_priority_class(n, _preload_content=False)
                    ),
                )
            except NotFoundError:
                try:
                    kube_call(
                        f"create PriorityClass {name}",
                        lambda b=body: self._scheduling.create_priority_class(  # type: ignore[misc]
                            b, _preload_content=False
                        ),
                    )
                    changed.append(f"created PriorityClass {name} ({value})")
                except AlreadyExistsError:
                    continue
                except PermanentError as error:
                    msg = (
                        f"{error}; install the campaign PriorityClasses (steward render ships them)"
                    )
                    raise PermanentError(msg) from error
                continue
            if existing.get("value") != value:
                msg = (
                    f"PriorityClass {name} exists with value {existing.get('value')}, not "
                    f"{value}; its value cannot change: delete it and Steward re-creates it"
                )
                raise PermanentError(msg)
        self._priority_classes_done = True
        return changed

    # -- ConfigMaps ---------------------------------------------------------------------

    def create_config_map(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        owner: Owner | None,
        labels: Mapping[str, str],
    ) -> bool:
        """Create a ConfigMap; False if it exists already (it is immutable: same content).

        Without an ``owner`` it stays until `delete_config_maps`.
        """
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, MANAGED_BY[0]: MANAGED_BY[1]},
        }
        if owner is not None:
            metadata["ownerReferences"] = [owner.reference()]
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "immutable": True,
            "data": dict(data),
        }
        try:
            kube_call(
                f"create ConfigMap {namespace}/{name}",
                # The client sends a dict as it is; building its model would only cost time.
                lambda: self._core.create_namespaced_config_map(
                    namespace,
                    body,  # type: ignore[arg-type]
                    _preload_content=False,
                ),
            )
        except AlreadyExistsError:
            return False
        return True

    def _config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap as JSON; None if it does not exist."""
        try:
            return kube_call(
                f"get ConfigMap {namespace}/{name}",
                lambda: response_json(
                    self._core.read_namespaced_config_map(name, namespace, _preload_content=False)
                ),
            )
        except NotFoundError:
            return None

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ConfigMap's data; None if it does not exist."""
        body = self._config_map(namespace, name)
        return None if body is None else dict(body.get("data") or {})

    def delete_config_maps(self, namespace: str, labels: Mapping[str, str]) -> None:
        """Delete every ConfigMap with ``labels`` in the namespace."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        kube_call(
            f"delete ConfigMaps {namespace} {selector}",
            lambda: self._core.delete_collection_namespaced_config_map(
                namespace, label_selector=selector, _preload_content=False
            ),
        )

    def config_map_owners(self, namespace: str, name: str) -> set[str] | None:
        """The uids of the ConfigMap's owners; None if it does not exist."""
        body = self._config_map(namespace, name)
        if body is None:
            return None
        return {ref["uid"] for ref in body["metadata"].get("ownerReferences") or []}

    def add_config_map_owner(self, namespace: str, name: str, owner: Owner) -> bool:
        """Add OWNER to the ConfigMap's owners, keeping the others (strategic merge by uid).

        False if the ConfigMap does not exist (the garbage collector may have just deleted it).
        """
        body = {"metadata": {"ownerReferences": [owner.reference()]}}
        try:
            kube_call(
                f"patch ConfigMap {namespace}/{name}",
                lambda: self._core.patch_namespaced_config_map(
                    name, namespace, body, _content_type=_STRATEGIC, _preload_content=False
                ),
            )
        except NotFoundError:
            return False
        return True

    def config_map_exists(self, namespace: str, name: str) -> bool:
        """Whether the ConfigMap exists."""
        try:
            kube_call(
                f"get ConfigMap {namespace}/{name}",
                lambda: self._core.read_namespaced_config_map(
                    name, namespace, _preload_content=False
                ),
            )
        except NotFoundError:
            return False
        return True

    # -- Jobs ---------------------------------------------------------------------------

    def create_job(self, spec: JobSpec) -> bool:
        """Create the Job; False if this campaign's Job of that name exists already.

        Raises
        ------
        PermanentError
            A Job of that name exists and belongs to something else (a previous campaign of
            the same name whose Jobs are still being deleted): never adopted.
        """
        try:
            kube_call(
                f"create Job {spec.namespace}/{spec.name}",
                lambda: self._batch.create_namespaced_job(
                    spec.namespace,
                    spec.manifest(),  # type: ignore[arg-type]  # a dict is sent as it is
                    _preload_content=False,
                ),
            )
        except AlreadyExistsError:
            existing = self.get_job(spec.namespace, spec.name)
            owner_uid = ((existing or {}).get("metadata", {}).get("labels") or {}).get(
                LABEL_CAMPAIGN_UID
            )
            if existing is not None and owner_uid != spec.owner.uid:
                msg = (
                    f"Job {spec.namespace}/{spec.name} exists and belongs to campaign UID "
                    f"{owner_uid}, not {spec.owner.uid}: wait until it is deleted"
                )
                raise PermanentError(msg) from None
            return False
        return True

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None."""
        try:
            return kube_call(
                f"get Job {namespace}/{name}",
                lambda: response_json(
                    self._batch.read_namespaced_job(name, namespace, _preload_content=False)
                ),
            )
        except NotFoundError:
            return None

    def list_jobs(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Jobs carrying all ``labels``."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return self._list(
            f"list Jobs {namespace} {selector}",
            lambda cont: self._batch.list_namespaced_job(
                namespace,
                label_selector=selector,
                limit=_PAGE,
                _continue=cont,
                _preload_content=False,
            ),
        )

    def set_suspend(self, namespace: str, name: str, *, suspend: bool) -> bool:
        """Suspend or resume a Job; False if it is gone."""
        return self._patch_job(namespace, name, {"spec": {"suspend": suspend}})

    def set_parallelism(self, namespace: str, name: str, parallelism: int) -> bool:
        """Change a Job's parallelism; False if it is gone."""
        return self._patch_job(namespace, name, {"spec": {"parallelism": parallelism}})

    def _patch_job(self, namespace: str, name: str, body: Mapping[str, Any]) -> bool:
        try:
            kube_call(
                f"patch Job {namespace}/{name}",
                lambda: self._batch.patch_namespaced_job(
                    name, namespace, dict(body), _content_type=_MERGE, _preload_content=False
                ),
            )
        except NotFoundError:
            return False
        return True

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods; False if it was gone.

        The pods keep `POD_FINALIZER` until their attempts are recorded.
        """
        try:
            kube_call(
                f"delete Job {namespace}/{name}",
                lambda: self._batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False
                ),
            )
        except NotFoundError:
            return False
        return True

    # -- pods ---------------------------------------------------------------------------

    def ended_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Pods with ``labels`` that ended (Succeeded or Failed) and are not recorded yet."""
        selector = ",".join(
            [f"{k}={v}" for k, v in sorted(labels.items())] + [f"!{LABEL_RECORDED}"]
        )
        fields = "status.phase!=Running,status.phase!=Pending,status.phase!=Unknown"
        return self._list(
            f"list ended pods {namespace} {selector}",
            lambda cont: self._core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                field_selector=fields,
                limit=_PAGE,
                _continue=cont,
                _preload_content=False,
            ),
        )

    def unrecorded_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Pods with ``labels`` whose attempt is not recorded, in any phase."""
        selector = ",".join(
            [f"{k}={v}" for k, v in sorted(labels.items())] + [f"!{LABEL_RECORDED}"]
        )
        return self._list(
            f"list pods {namespace} {selector}",
            lambda cont: self._core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                limit=_PAGE,
                _continue=cont,
                _preload_content=False,
            ),
        )

    def mark_recorded(self, pods: Iterable[Mapping[str, Any]]) -> int:
        """Label each pod recorded and remove `POD_FINALIZER` (one PATCH each, in parallel).

        A deleted pod then goes away. Returns how many were patched (gone ones are not).
        """
        body = {
            "metadata": {
                "labels": {LABEL_RECORDED: "true"},
                "$deleteFromPrimitiveList/finalizers": [POD_FINALIZER],
            }
        }

        def patch(pod: Mapping[str, Any]) -> bool:
            meta = pod["metadata"]
            try:
                kube_call(
                    f"patch pod {meta['namespace']}/{meta['name']}",
                    lambda: self._core.patch_namespaced_pod(
                        meta["name"],
                        meta["namespace"],
                        body,
                        _content_type=_STRATEGIC,
                        _preload_content=False,
                    ),
                )
            except NotFoundError:
                return False
            return True

        return sum(self._pool.map(patch, list(pods)))

    def _list(self, what: str, call: Any) -> list[dict[str, Any]]:  # noqa: ANN401 - client call
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            page = kube_call(what, lambda c=cont: response_json(call(c)))  # type: ignore[misc]
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue") or None
            if cont is None:
                return items
