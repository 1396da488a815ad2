"""Kueue, the Kubernetes batch queueing controller, run on loopback beside a `ControlPlane`.

`Kueue` installs Kueue's CRDs and webhook configurations on a control plane of the harness and
runs the manager binary built by `ensure_kueue` against it, the way Kueue's own Deployment
runs in a cluster, with two differences forced by loopback:

- The API server reaches the webhooks by ``url: https://127.0.0.1:<port>/...`` instead of a
  Service (this control plane has no Service network). The serving certificate, from
  `create_serving_pki`, names both 127.0.0.1 and the Service's DNS name.
- Kueue's internal certificate management stays on, as in its default install, but finds the
  certificate already in its Secret and keeps it: the rotator only replaces a certificate
  that is not valid for ``kueue-webhook-service.kueue-system.svc`` and a CA that is not valid
  for ``kueue-ca``, and ours are both. (With the rotator off, Kueue v0.19 insists on a metrics
  certificate at the fixed path /etc/kueue/metrics/certs, outside any run directory.) The
  files a kubelet would mount from that Secret are written into the webhook's ``certDir``.

Only the webhooks for Kueue's own kinds and batch/v1 Jobs are installed: the other
integrations (pods, Deployments, JobSets, Kubeflow, Ray...) are off in the configuration, and
their webhooks would only add a round trip to every pod.

The configuration (`KueueSettings`) turns on fair sharing and MultiKueue's Incremental
dispatcher with a step of one cluster, so a workload goes to the first worker in a
MultiKueueConfig's order and spills to the next after Kueue's round of five minutes. It runs
several reconciles per kind, as Kueue's own install does, and turns off the features that
make Kueue watch every pod (topology-aware scheduling, elastic Jobs), which Steward does not
use: ``bench/kueue.py`` measures what both change.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import yaml

from steward.models.site import Site
from steward.testing.certs import ServingPki, create_serving_pki
from steward.testing.childprocess import ChildProcess, free_port, log_tail
from steward.testing.controlplane import ControlPlane, ControlPlaneError, is_healthy
from steward.testing.k8sbuild import KueueBuild, ensure_kueue

__all__ = [
    "INCREMENTAL_DISPATCHER",
    "KUEUE_API",
    "KUEUE_NAMESPACE",
    "POOL_LABELS",
    "QUEUEING_STAGES",
    "Kueue",
    "KueueSettings",
    "batch_site",
    "ensure_inotify_instances",
    "worker_kubeconfig_secret",
]

KUEUE_NAMESPACE: Final = "kueue-system"
"""Namespace of Kueue's Secrets (its certificate, MultiKueue's worker kubeconfigs)."""

KUEUE_API: Final = "/apis/kueue.x-k8s.io/v1beta2"
"""REST prefix of Kueue's storage version."""

QUEUEING_STAGES: Final = Path(__file__).with_name("queueing-stages.yaml")
"""kwok Stage making a Job's pod run for its ``kwok.steward.lsst.io/runtime`` before it succeeds:
pass it to `ControlPlane` (``stages=``) so pods hold quota as real ones would."""

INCREMENTAL_DISPATCHER: Final = "kueue.x-k8s.io/multikueue-dispatcher-incremental"
"""MultiKueue dispatcher that nominates worker clusters in the MultiKueueConfig's order."""
ALL_AT_ONCE_DISPATCHER: Final = "kueue.x-k8s.io/multikueue-dispatcher-all-at-once"
"""MultiKueue dispatcher that offers a workload to every worker cluster at once (Kueue's
default); the first worker to admit it runs it."""

POOL_LABELS: Final = {"pool": "batch"}
"""Node labels of the one node pool of `batch_site`."""

_WEBHOOK_SERVICE: Final = "kueue-webhook-service"
_WEBHOOK_SECRET: Final = "kueue-webhook-server-cert"  # noqa: S105 - a Secret's name
_CA_NAME: Final = "kueue-ca"
_WEBHOOK_GROUPS: Final = frozenset({"kueue.x-k8s.io", "batch"})
_SYSTEM_NAMESPACES: Final = ("kube-system", KUEUE_NAMESPACE)


_TAS_GATES: Final = (
    "TopologyAwareScheduling",
    "TASProfileMixed",
    "TASHandleOverlappingFlavors",
    "TASFailedNodeReplacement",
    "TASFailedNodeReplacementFailFast",
    "TASReplaceNodeOnPodTermination",
    "TASReplaceNodeOnNodeTaints",
    "TASMultiLayerTopology",
    "TASRecomputeAssignmentWithinSchedulingCycle",
)
"""Topology-aware scheduling and the gates of Kueue v0.19.2 that are on by default and that
Kueue refuses to start with while it is off (``pkg/config/validation.go``)."""


@dataclass(frozen=True)
class KueueSettings:
    """The parts of Kueue's Configuration that Steward's tests and stack choose."""

    worker_lost_timeout_seconds: int = 900
    """How long a manager keeps a workload on a worker it cannot reach (Kueue: 15 min)."""

    dispatcher: str = INCREMENTAL_DISPATCHER
    """MultiKueue dispatcher; Incremental tries the configured clusters in order."""

    step_size: int = 1
    """Worker clusters the Incremental dispatcher adds per round: one, so order is kept."""

    gc_interval_seconds: int = 60
    """MultiKueue's garbage collection of orphaned remote objects."""

    feature_gates: Mapping[str, bool] = field(
        default_factory=lambda: {
            "VisibilityOnDemand": False,
            "ElasticJobsViaWorkloadSlices": False,
            **dict.fromkeys(_TAS_GATES, False),
        }
    )
    """Feature gates. The on-demand visibility API server is off (it binds 0.0.0.0:8082).
    Topology-aware scheduling and elastic Jobs (both on by default in Kueue v0.19) are off:
    Steward renders no Topology and no elastic Job, and either one makes Kueue watch every
    pod of the cluster and reconcile on each change of one (``cmd/kueue/main.go``: the TAS
    node, ungater and non-TAS-usage controllers, the elastic-Job ungater), which on a batch
    cluster is CPU spent on nothing Steward uses."""

    concurrency: Mapping[str, int] = field(
        default_factory=lambda: {
            "Job.batch": 5,
            "Workload.kueue.x-k8s.io": 10,
            "LocalQueue.kueue.x-k8s.io": 5,
            "ClusterQueue.kueue.x-k8s.io": 5,
            "Cohort.kueue.x-k8s.io": 1,
            "ResourceFlavor.kueue.x-k8s.io": 1,
        }
    )
    """Concurrent reconciles per kind (``controller.groupKindConcurrency``), as Kueue's own
    install sets them (``config/components/manager/controller_manager_config.yaml``). Without
    them controller-runtime runs one reconcile at a time per kind, and the Job reconciler that
    unsuspends an admitted Job waits behind the status changes of every running Job."""


_INOTIFY_INSTANCES: Final = Path("/proc/sys/fs/inotify/max_user_instances")
_INOTIFY_WANTED: Final = 1024


def ensure_inotify_instances(minimum: int = _INOTIFY_WANTED) -> int:
    """Raise the per-user limit of inotify instances to MINIMUM when allowed; return the limit.

    Every Kubernetes component and every controller-runtime manager (Kueue's certificate
    watcher, MultiKueue's kubeconfig watcher) holds inotify instances, and all of them run as
    one user here: a manager and two worker control planes with Kueue need well over the
    Linux default of 128, and Kueue exits with "couldn't initialize inotify: too many open
    files" without them. The limit is only raised, never lowered, and only where the harness
    may write it (root, a writable /proc/sys); elsewhere it is left as it is.
    """
    try:
        current = int(_INOTIFY_INSTANCES.read_text())
    except (OSError, ValueError):
        return 0
    if current < minimum:
        with contextlib.suppress(OSError):
            _INOTIFY_INSTANCES.write_text(f"{minimum}\n")
            current = minimum
    return current


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def worker_kubeconfig_secret(name: str, worker: ControlPlane) -> dict[str, Any]:
    """A Secret carrying WORKER's admin kubeconfig, as MultiKueue reads it (key ``kubeconfig``).

    The kubeconfig embeds its certificates, which MultiKueue requires (it refuses file
    references).
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": KUEUE_NAMESPACE},
        "data": {"kubeconfig": _b64(worker.kubeconfig.read_bytes())},
    }


@dataclass
class _Ports:
    webhook: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


class Kueue:
    """Kueue's manager running against one `ControlPlane`.

    Parameters
    ----------
    plane
        A started control plane; Kueue's files and log go to ``<plane.run_dir>/kueue``.
    build
        The binary and manifests; `ensure_kueue` builds or reuses them by default.
    settings
        Configuration choices.
    start_timeout
        Seconds Kueue may take to become ready.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        build: KueueBuild | None = None,
        settings: KueueSettings | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.plane = plane
        self._build = build
        self.settings = settings or KueueSettings()
        self._start_timeout = start_timeout
        self._ports = _Ports()
        self._process: ChildProcess | None = None
        self._pki: ServingPki | None = None

    @property
    def run_dir(self) -> Path:
        """Directory of Kueue's configuration, certificates and log."""
        return self.plane.run_dir / "kueue"

    @property
    def log(self) -> Path:
        """Kueue's log."""
        return self.run_dir / "kueue.log"

    @property
    def health_url(self) -> str:
        """Readiness endpoint: 200 once the certificates are in place and webhooks listen."""
        return f"http://127.0.0.1:{self._ports.health}/readyz"

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Install Kueue's CRDs and webhooks on the plane, start Kueue, wait until it admits.

        Raises
        ------
        ControlPlaneError
            Kueue exited or was not ready in time; the message ends with its log.
        """
        if self._process is not None:
            raise ControlPlaneError("Kueue is already started")
        build = self._build or ensure_kueue()
        ensure_inotify_instances()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._pki is None:
            self._pki = create_serving_pki(
                self.run_dir / "pki",
                ca_name=_CA_NAME,
                dns_names=[f"{_WEBHOOK_SERVICE}.{KUEUE_NAMESPACE}.svc"],
                ip_addresses=["127.0.0.1"],
            )
        self._install(build, self._pki)
        config = self.run_dir / "config.yaml"
        config.write_text(yaml.safe_dump(self._configuration(self._pki), sort_keys=False))
        self._process = ChildProcess.start(
            [str(build.kueue), f"--config={config}", f"--kubeconfig={self.plane.kubeconfig}"],
            log=self.log,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _install(self, build: KueueBuild, pki: ServingPki) -> None:
        plane = self.plane
        plane.apply(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}},
        )
        plane.apply(
            f"/api/v1/namespaces/{KUEUE_NAMESPACE}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": _WEBHOOK_SECRET, "namespace": KUEUE_NAMESPACE},
                "data": {
                    "ca.crt": _b64(pki.ca_cert.read_bytes()),
                    "ca.key": _b64(pki.ca_key.read_bytes()),
                    "tls.crt": _b64(pki.serving_cert.read_bytes()),
                    "tls.key": _b64(pki.serving_key.read_bytes()),
                },
            },
        )
        crd_dir = self.run_dir / "crds"
        crd_dir.mkdir(exist_ok=True)
        for crd in _patched_crds(build, self._url("/convert"), pki):
            path = crd_dir / f"{crd['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(crd, sort_keys=False))
        plane.install_crds(crd_dir)
        for configuration in self._webhook_configurations(build, pki):
            plural = configuration["kind"].lower() + "s"
            plane.apply(f"/apis/admissionregistration.k8s.io/v1/{plural}", configuration)

    def _url(self, path: str) -> str:
        return f"https://127.0.0.1:{self._ports.webhook}{path}"

    def _webhook_configurations(self, build: KueueBuild, pki: ServingPki) -> list[dict[str, Any]]:
        """Kueue's webhook configurations, reached by URL, for Kueue's kinds and Jobs only."""
        ca_bundle = _b64(pki.ca_cert.read_bytes())
        configurations = []
        for document in yaml.safe_load_all(build.webhook_manifests.read_text()):
            if not document:
                continue
            webhooks = []
            for webhook in document["webhooks"]:
                groups = {g for rule in webhook["rules"] for g in rule["apiGroups"]}
                if not groups <= _WEBHOOK_GROUPS:
                    continue
                path = webhook["clientConfig"]["service"]["path"]
                webhook["clientConfig"] = {"url": self._url(path), "caBundle": ca_bundle}
                if "batch" in groups:  # as Kueue's kustomization does for job kinds
                    webhook["namespaceSelector"] = {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "NotIn",
                                "values": list(_SYSTEM_NAMESPACES),
                            }
                        ]
                    }
                webhooks.append(webhook)
            document["metadata"]["name"] = "kueue-" + document["metadata"]["name"]
            document["webhooks"] = webhooks
            configurations.append(document)
        return configurations

    def _configuration(self, pki: ServingPki) -> dict[str, Any]:
        settings = self.settings
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self._ports.health}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self._ports.metrics}"},
            "webhook": {
                "host": "127.0.0.1",
                "port": self._ports.webhook,
                "certDir": str(pki.cert_dir),
            },
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {
                "enable": True,
                "webhookServiceName": _WEBHOOK_SERVICE,
                "webhookSecretName": _WEBHOOK_SECRET,
            },
            "controller": {"groupKindConcurrency": dict(settings.concurrency)},
            "clientConnection": {"qps": 300, "burst": 500},
            "integrations": {"frameworks": ["batch/job"]},
            "fairSharing": {
                "preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
            },
            "multiKueue": {
                "gcInterval": f"{settings.gc_interval_seconds}s",
                "workerLostTimeout": f"{settings.worker_lost_timeout_seconds}s",
                "dispatcherName": settings.dispatcher,
                # Kueue refuses a step size for any other dispatcher.
                **(
                    {"incrementalDispatcherConfig": {"stepSize": settings.step_size}}
                    if settings.dispatcher == INCREMENTAL_DISPATCHER
                    else {}
                ),
            },
            "featureGates": dict(settings.feature_gates),
        }

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while not (is_healthy(self.health_url, None) and self._admits()):
            self._check_alive()
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"Kueue not ready at {self.health_url} within {self._start_timeout:.0f} s;"
                    f" end of {self.log}:\n{log_tail(self.log)}"
                )
            time.sleep(0.2)

    def _admits(self) -> bool:
        """Whether Kueue's webhooks answer the API server (a dry-run ResourceFlavor)."""
        probe = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "steward-readiness-probe"},
        }
        try:
            self.plane.request("POST", f"{KUEUE_API}/resourceflavors?dryRun=All", probe)
        except ControlPlaneError:
            return False
        return True

    def _check_alive(self) -> None:
        if self._process is not None and not self._process.running():
            raise ControlPlaneError(
                f"Kueue exited with status {self._process.popen.returncode};"
                f" end of {self.log}:\n{log_tail(self.log)}"
            )

    # --- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop Kueue (TERM, then KILL after a grace period). Safe to call twice."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """SIGKILL Kueue at once, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process = None

    def restart(self) -> None:
        """Start again on the same ports and certificates (after `stop` or `kill`)."""
        self.stop()
        self.start()


def _patched_crds(build: KueueBuild, convert_url: str, pki: ServingPki) -> Iterator[dict[str, Any]]:
    """Kueue's CRDs, with conversion through the webhook URL where Kueue's install sets it.

    Kueue's kustomization patches some CRDs (those served in v1beta1 and v1beta2) to convert
    through ``/convert`` on its webhook Service; the same patch here names the URL instead.
    """
    kustomization = yaml.safe_load(build.crd_kustomization.read_text())
    converted = set()
    for patch in kustomization.get("patches") or []:
        with contextlib.suppress(KeyError, TypeError):
            document = yaml.safe_load((build.crd_patches / patch["path"]).read_text())
            if document["spec"]["conversion"]["strategy"] == "Webhook":
                converted.add(document["metadata"]["name"])
    for path in sorted(build.crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["metadata"]["name"] in converted:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "url": convert_url,
                        "caBundle": _b64(pki.ca_cert.read_bytes()),
                    },
                    "conversionReviewVersions": ["v1"],
                },
            }
        yield crd


def batch_site(
    name: str,
    queues: Mapping[str, Mapping[str, str]],
    *,
    cohort: str | None = None,
    weights: Mapping[str, float] | None = None,
    kubeconfig_secret: str | None = None,
) -> Site:
    """A Site with one node pool (``pool=batch``) and QUEUES: name -> {cpu, memory} quota.

    For tests and benchmarks: a minimal Site (one mock RSE) whose batch capacity is what is
    under test; the nodes of `ControlPlane.create_nodes` carry the pool's labels when given
    ``labels=POOL_LABELS``.
    """
    batch: dict[str, Any] = {
        "nodePools": [{"name": "batch", "nodeLabels": POOL_LABELS}],
        "queues": [
            {
                "name": queue,
                "quotas": [{"pool": "batch", **quota}],
                "weight": (weights or {}).get(queue, 1.0),
            }
            for queue, quota in queues.items()
        ],
    }
    if cohort is not None:
        batch["cohort"] = cohort
    if kubeconfig_secret is not None:
        batch["kubeconfigSecret"] = kubeconfig_secret
    return Site.model_validate(
        {
            "apiVersion": "steward.lsst.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": name},
            "spec": {
                "facility": name.upper().replace("-", "_"),
                "rses": [
                    {
                        "name": f"{name.upper().replace('-', '_')}_DISK",
                        "type": "DISK",
                        "protocols": [
                            {"scheme": "mock", "hostname": "localhost", "port": 0, "prefix": "/x"}
                        ],
                    }
                ],
                "batch": batch,
            },
        }
    )
